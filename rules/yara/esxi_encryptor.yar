// Linux and ESXi encryptors stop the virtual machines before encrypting
// their disks (REvil's Linux build, and most families since): they carry
// the esxcli/vim-cmd commands for that next to encryption wording.
rule TW_Linux_ESXi_Encryptor
{
    meta:
        id = "TW-YARA-0005"
        description = "Linux/ESXi encryptor: stops virtual machines and encrypts their disks"
        author = "tillwatch"
        reference = "https://attack.mitre.org/techniques/T1486/"
        technique = "T1486,T1489"
        severity = 88
        response = "kill"
    strings:
        $vm1 = "esxcli vm process kill" ascii
        $vm2 = "vim-cmd vmsvc/getallvms" ascii
        $vm3 = "vim-cmd vmsvc/power.off" ascii
        $vm4 = "vmsvc/snapshot.removeall" ascii
        $vm5 = "/vmfs/volumes" ascii
        $vm6 = ".vmdk" ascii
        $vm7 = ".vswp" ascii
        $enc1 = "encrypt" ascii nocase
        $enc2 = ".onion" ascii
    condition:
        (uint32(0) == 0x464c457f or uint16(0) == 0x2123) and 3 of ($vm*) and 1 of ($enc*)
}

// The Kaseya VSA dropper chain (July 2021): the RMM agent ran a command that
// disabled Defender, copied certutil to cert.exe, decoded agent.crt into
// agent.exe under C:\kworking, which side-loaded the encryptor into an old
// MsMpEng.exe via mpsvc.dll. Scripts, logs and droppers carry these strings.
rule TW_Kaseya_Dropper_Chain
{
    meta:
        id = "TW-YARA-0003"
        description = "Artefacts of the Kaseya VSA ransomware dropper chain (agent.crt decoded by a renamed certutil, Defender disabled)"
        author = "tillwatch"
        reference = "https://www.huntress.com/blog/rapid-response-kaseya-vsa-mass-msp-ransomware-incident"
        technique = "T1140,T1562.001,T1036.003,T1574.002"
        severity = 85
        response = "kill"
    strings:
        $a1 = "agent.crt" ascii wide nocase
        $a2 = "kworking" ascii wide nocase
        $a3 = "-decode" ascii wide nocase
        $a4 = "DisableRealtimeMonitoring $true" ascii wide nocase
        $a5 = "ping 127.0.0.1 -n 4979" ascii wide nocase
        $a6 = "\\cert.exe" ascii wide nocase
        $a7 = "mpsvc.dll" ascii wide nocase
        $a8 = "DisableIntrusionPreventionSystem $true" ascii wide nocase
    condition:
        filesize < 4MB and 4 of them
}

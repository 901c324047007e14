// Ransom-note wording. Notes are dropped into every folder an encryptor
// touches; their wording is remarkably stable across families.
rule TW_Ransom_Note_Wording
{
    meta:
        id = "TW-YARA-0001"
        description = "Ransom note: says files were encrypted and how to pay for the decryptor"
        author = "tillwatch"
        reference = "https://attack.mitre.org/techniques/T1486/"
        technique = "T1486"
        severity = 73
    strings:
        $enc1 = "your files are encrypted" ascii wide nocase
        $enc2 = "your files have been encrypted" ascii wide nocase
        $enc3 = "all of your files" ascii wide nocase
        $enc4 = "your network has been penetrated" ascii wide nocase
        $pay1 = "decryptor" ascii wide nocase
        $pay2 = ".onion" ascii wide nocase
        $pay3 = "tor browser" ascii wide nocase
        $pay4 = "private key" ascii wide nocase
        $pay5 = "do not rename encrypted files" ascii wide nocase
    condition:
        filesize < 256KB and 1 of ($enc*) and 2 of ($pay*)
}

// A system tool under another name: Windows PE version info still names
// the original file, so a "cert.exe" whose OriginalFilename is CertUtil.exe
// is certutil hiding from command-line rules (the Kaseya chain did exactly
// this). Uses the filename external, as public rule sets do.
rule TW_Renamed_System_Tool
{
    meta:
        id = "TW-YARA-0004"
        description = "Windows system tool (certutil, PsExec, rundll32) renamed to evade detection"
        author = "tillwatch"
        reference = "https://attack.mitre.org/techniques/T1036/003/"
        technique = "T1036.003"
        severity = 60
    strings:
        $certutil = "O\x00r\x00i\x00g\x00i\x00n\x00a\x00l\x00F\x00i\x00l\x00e\x00n\x00a\x00m\x00e\x00\x00\x00C\x00e\x00r\x00t\x00U\x00t\x00i\x00l\x00.\x00e\x00x\x00e" nocase
        $psexec = "O\x00r\x00i\x00g\x00i\x00n\x00a\x00l\x00F\x00i\x00l\x00e\x00n\x00a\x00m\x00e\x00\x00\x00p\x00s\x00e\x00x\x00e\x00c\x00.\x00c" nocase
        $rundll = "O\x00r\x00i\x00g\x00i\x00n\x00a\x00l\x00F\x00i\x00l\x00e\x00n\x00a\x00m\x00e\x00\x00\x00R\x00U\x00N\x00D\x00L\x00L\x003\x002\x00.\x00E\x00X\x00E" nocase
    condition:
        uint16(0) == 0x5A4D and (
            ($certutil and not filename matches /^certutil\.exe$/i) or
            ($psexec and not filename matches /^psexec(64)?\.exe$/i) or
            ($rundll and not filename matches /^rundll32\.exe$/i)
        )
}

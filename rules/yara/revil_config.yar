// REvil/Sodinokibi keeps its configuration as a JSON object with short keys
// (public key, campaign id, folders and extensions to skip, processes to
// kill, the note). The key set identifies the family even when the values
// change per campaign.
rule TW_REvil_Config_Blob
{
    meta:
        id = "TW-YARA-0002"
        description = "REvil/Sodinokibi-style ransomware configuration (pk, pid, sub, wht, wfld, prc, nbody keys)"
        author = "tillwatch"
        reference = "https://www.secureworks.com/research/revil-sodinokibi-ransomware"
        technique = "T1486,T1490"
        severity = 90
        response = "kill"
    strings:
        $k1 = "\"pk\":\"" ascii
        $k2 = "\"pid\":\"" ascii
        $k3 = "\"sub\":\"" ascii
        $k4 = "\"dbg\":" ascii
        $k5 = "\"wht\":{" ascii
        $k6 = "\"wfld\":[" ascii
        $k7 = "\"prc\":[" ascii
        $k8 = "\"dmn\":\"" ascii
        $k9 = "\"nbody\":\"" ascii
        $k10 = "\"nname\":\"" ascii
        $k11 = "\"fld\":[" ascii
        $k12 = "\"ext\":[" ascii
    condition:
        7 of them
}

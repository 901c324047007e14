rule TW_Test_Marker
{
    meta:
        id = "TW-TEST-0001"
        description = "test marker"
        severity = 42
        technique = "T1486"
        author = "tillwatch tests"
        reference = "https://example.invalid/marker"
    strings:
        $a = "tillwatch-test-marker-7f3a"
    condition:
        $a
}

// not listed in any index: not loaded (a duplicate name would break it)
rule TW_Test_Fake_Loader
{
    condition:
        false
}

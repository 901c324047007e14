rule TW_Test_Fake_Webshell
{
    strings:
        $a = "tillwatch_test_eval_marker"
    condition:
        $a
}

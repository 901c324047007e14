rule No_Meta
{
    strings:
        $a = "tillwatch-nometa-marker"
    condition:
        $a
}

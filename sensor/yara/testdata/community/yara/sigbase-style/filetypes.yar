/* signature-base style: LOKI/THOR externals, filetype from content */
rule TW_Test_Cloaked_As_JPG
{
    meta:
        description = "a known type cloaked as .jpg"
        score = 60
        id = "5f0d3a1e-0000-4000-8000-00000000aa01"
    condition:
        (extension == ".jpg" or extension == ".jpeg") and (
            filetype == "EXE" or filetype == "ELF" or filetype == "MACH-O" or
            filetype == "VBS" or filetype == "PHP" or filetype == "JSP" or
            filetype == "Python" or filetype == "ASP" or filetype == "BATCH" or
            filetype == "RTF" or filetype == "MDMP" or
            filetype contains "PowerShell" or filetype contains "Base64"
        )
}

rule TW_Test_PHP_Anywhere
{
    meta:
        description = "PHP content whatever the name"
        score = 70
        id = "5f0d3a1e-0000-4000-8000-00000000aa02"
    condition:
        filetype == "PHP" and filename != "index.php"
}

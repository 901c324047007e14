/*
Index in the Yara-Rules layout, written for tillwatch's tests.
*/
include "./malware/common.yar"
include "./malware/fake_loader.yar"
include "./webshells/fake_webshell.yar"

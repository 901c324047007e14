include "./webshells/fake_webshell.yar"

#!/bin/sh
# tillwatch test sample: text only
for id in $(vim-cmd vmsvc/getallvms | awk 'NR>1{print $1}'); do vim-cmd vmsvc/power.off $id; done
ls /vmfs/volumes/*/*.vmdk > /tmp/list # then encrypt each (not here)

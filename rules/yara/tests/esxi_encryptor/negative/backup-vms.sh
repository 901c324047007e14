#!/bin/sh
# nightly VM snapshot for the store server
for id in $(vim-cmd vmsvc/getallvms | awk 'NR>1{print $1}'); do vim-cmd vmsvc/snapshot.create $id nightly; done
ls /vmfs/volumes/*/*.vmdk

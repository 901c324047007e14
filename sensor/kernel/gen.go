package kernel

// The compiled programs are committed (tripwire_bpfel.go, tripwire_bpfel.o)
// so that building the sensor needs no clang; `go generate ./sensor/kernel`
// rebuilds them with Debian's clang-14, and TestObjectMatchesSource fails
// when bpf/tripwire.c changed without a rebuild (bpf/tripwire.c.sha256).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-14 -strip llvm-strip-14 -target bpfel -tags linux -go-package kernel -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" tripwire bpf/tripwire.c
//go:generate sh -c "sha256sum bpf/tripwire.c | cut -d' ' -f1 > bpf/tripwire.c.sha256"

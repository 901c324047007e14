// Package pki keeps the collector's private certificate authority and its
// server certificate in the data dir. Sensors and the CLI pin ca.pem instead
// of trusting system roots, so the collector needs no public certificate and
// a till never trusts anything but its own fleet's collector.
package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tillwatch/tillwatch/internal/logkey"
)

// File names inside the data dir.
const (
	CAFile = "ca.pem"
	// CADir holds the CA key alone (0700), apart from the server key and
	// the kill-switch signing key that sit in the data dir: it can be
	// backed up, mounted or audited on its own.
	CADir          = "ca"
	CAKeyFile      = CADir + "/ca.key"
	ServerCertFile = "server.pem"
	ServerKeyFile  = "server.key"
	// legacyCAKeyFile is where versions before CADir kept the CA key; a
	// start moves it.
	legacyCAKeyFile = "ca.key"
)

// Lifetimes. The CA outlives many server certificates; the server
// certificate is renewed once it gets within RenewBefore of expiry, at
// start and while running (Bundle.Run), and served through
// GetCertificate, so a collector never serves an expired certificate
// however long it runs.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 397 * 24 * time.Hour
	RenewBefore    = 30 * 24 * time.Hour
	// RenewCheck is how often a running collector looks at its server
	// certificate.
	RenewCheck = 12 * time.Hour
)

// Options tunes Ensure. The zero value is usable.
type Options struct {
	// ExtraNames are DNS names or IP addresses added to the server
	// certificate's SANs on top of localhost, 127.0.0.1, ::1 and the hostname.
	ExtraNames []string
	// Hostname overrides os.Hostname (tests).
	Hostname string
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// Logger receives one line per file created; nil discards.
	Logger *slog.Logger
}

// Bundle is the collector's TLS material after Ensure.
type Bundle struct {
	Dir         string
	CAPath      string // the file sensors and the CLI pin with --ca
	CAPEM       []byte
	CA          *x509.Certificate
	Certificate tls.Certificate // server certificate chain and key, as of Ensure

	current atomic.Pointer[tls.Certificate] // what handshakes get; Renew replaces it
	dns     []string
	ips     []net.IP
	now     func() time.Time
	log     *slog.Logger
	renewMu sync.Mutex
}

// TLSConfig is the server-side TLS configuration: TLS 1.2 or newer with the
// current server certificate, read at every handshake so a renewal takes
// effect without a restart.
func (b *Bundle) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return b.current.Load(), nil
		},
	}
}

// Current returns the server certificate handshakes get now.
func (b *Bundle) Current() *tls.Certificate { return b.current.Load() }

// Renew reissues the server certificate if it is within RenewBefore of
// expiry, and reports whether it did. The CA key is read from disk for
// the purpose (and its permissions checked), then dropped.
func (b *Bundle) Renew() (bool, error) {
	b.renewMu.Lock()
	defer b.renewMu.Unlock()
	now := b.now()
	if leaf := b.current.Load().Leaf; leaf != nil && !now.Add(RenewBefore).After(leaf.NotAfter) {
		return false, nil
	}
	ca, caKey, _, err := loadOrCreateCA(b.Dir, now, b.log)
	if err != nil {
		return false, err
	}
	cert, err := issueServer(b.Dir, ca, caKey, now, b.dns, b.ips)
	if err != nil {
		return false, err
	}
	b.current.Store(&cert)
	b.log.Info("renewed the server certificate", logkey.Path, filepath.Join(b.Dir, ServerCertFile),
		"not_after", cert.Leaf.NotAfter.Format(time.RFC3339))
	return true, nil
}

// Run renews the server certificate every RenewCheck while ctx lives. A
// failed renewal is logged at error and retried at the next check: the
// current certificate keeps serving meanwhile (RenewBefore leaves a month).
func (b *Bundle) Run(ctx context.Context) {
	t := time.NewTicker(RenewCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := b.Renew(); err != nil {
			b.log.Error("cannot renew the server certificate; retrying in 12h", logkey.Error, err,
				"not_after", b.current.Load().Leaf.NotAfter.Format(time.RFC3339))
		}
	}
}

// Ensure loads the CA and server certificate from dir, creating whatever is
// missing. The CA is created once and never replaced (replacing it would
// orphan every enrolled sensor). The server certificate is reissued when it is
// missing, unreadable, not signed by the CA, near expiry, or lacks a wanted SAN.
func Ensure(dir string, opts Options) (*Bundle, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: create data dir: %w", err)
	}
	dns, ips := sans(opts)

	ca, caKey, caPEM, err := loadOrCreateCA(dir, now(), log)
	if err != nil {
		return nil, err
	}
	cert, err := loadServer(dir, ca, now(), dns, ips)
	if err != nil {
		log.Info("issuing server certificate", logkey.Reason, err.Error(), logkey.Path, filepath.Join(dir, ServerCertFile))
		cert, err = issueServer(dir, ca, caKey, now(), dns, ips)
		if err != nil {
			return nil, err
		}
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("pki: %w", err)
		}
	}
	b := &Bundle{
		Dir:         dir,
		CAPath:      filepath.Join(dir, CAFile),
		CAPEM:       caPEM,
		CA:          ca,
		Certificate: cert,
		dns:         dns,
		ips:         ips,
		now:         now,
		log:         log,
	}
	b.current.Store(&cert)
	return b, nil
}

// sans returns the DNS names and IPs the server certificate must carry.
func sans(opts Options) ([]string, []net.IP) {
	dns := []string{"localhost"}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	host := opts.Hostname
	if host == "" {
		// A machine without a hostname still gets a usable certificate.
		host, _ = os.Hostname()
	}
	names := append([]string{host}, opts.ExtraNames...)
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			continue
		}
		n = strings.ToLower(n)
		if !slices.Contains(dns, n) {
			dns = append(dns, n)
		}
	}
	return dns, ips
}

// moveLegacyCAKey moves a CA key from where earlier versions kept it (the
// data dir, beside the server and signing keys) into CADir.
func moveLegacyCAKey(dir string, log *slog.Logger) error {
	legacy, keyPath := filepath.Join(dir, legacyCAKeyFile), filepath.Join(dir, CAKeyFile)
	if _, err := os.Lstat(legacy); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if _, err := os.Lstat(keyPath); err == nil {
		return fmt.Errorf("pki: both %s and %s exist; keep the one that signed %s and remove the other", legacy, keyPath, CAFile)
	}
	if err := os.MkdirAll(filepath.Join(dir, CADir), 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := os.Rename(legacy, keyPath); err != nil {
		return fmt.Errorf("pki: move the CA key into %s: %w", filepath.Join(dir, CADir), err)
	}
	log.Info("moved the CA key into its own directory", logkey.Path, keyPath)
	return nil
}

// checkKeyMode refuses a private key file others can read.
func checkKeyMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return nil // reading it reports the error
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("pki: %s is readable or writable by group or others (mode %04o); run: chmod 600 %s", path, perm, path)
	}
	return nil
}

func loadOrCreateCA(dir string, now time.Time, log *slog.Logger) (*x509.Certificate, crypto.Signer, []byte, error) {
	if err := moveLegacyCAKey(dir, log); err != nil {
		return nil, nil, nil, err
	}
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	if err := checkKeyMode(keyPath); err != nil {
		return nil, nil, nil, err
	}
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		cert, key, err := parsePair(certPEM, keyPEM)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("pki: %s/%s: %w (restore them from backup; deleting them orphans every enrolled sensor)", certPath, CAKeyFile, err)
		}
		if !cert.IsCA {
			return nil, nil, nil, fmt.Errorf("pki: %s is not a CA certificate", certPath)
		}
		return cert, key, certPEM, nil
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		// First start: create below.
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, nil, nil, fmt.Errorf("pki: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, nil, nil, fmt.Errorf("pki: %w", keyErr)
	default:
		// Half a CA cannot sign and must not be silently replaced.
		return nil, nil, nil, fmt.Errorf("pki: only one of %s and %s exists in %s; restore the missing file or remove both to create a new CA (sensors must then re-pin ca.pem)", CAFile, CAKeyFile, dir)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "tillwatch collector CA", Organization: []string{"tillwatch"}},
		NotBefore:             now.Add(-time.Hour), // tolerate small clock skew on sensors
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("pki: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// Key first: a crash in between leaves a key without certificate, which
	// the next start reports instead of silently minting a second CA.
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return nil, nil, nil, fmt.Errorf("pki: %w", err)
	}
	if err := writeAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, nil, nil, err
	}
	if err := writeAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, nil, nil, err
	}
	log.Info("created collector CA; sensors and the CLI pin this file with --ca", logkey.Path, certPath)
	return cert, key, certPEM, nil
}

// loadServer returns the stored server certificate, or an error saying why it
// must be reissued.
func loadServer(dir string, ca *x509.Certificate, now time.Time, dns []string, ips []net.IP) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, ServerCertFile))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("no server certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, ServerKeyFile))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("no server key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("unusable server certificate: %w", err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return tls.Certificate{}, err
		}
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate not signed by the CA: %w", err)
	}
	if now.Add(RenewBefore).After(leaf.NotAfter) {
		return tls.Certificate{}, fmt.Errorf("server certificate expires %s", leaf.NotAfter.Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return tls.Certificate{}, fmt.Errorf("server certificate not valid before %s", leaf.NotBefore.Format(time.RFC3339))
	}
	for _, n := range dns {
		if !slices.Contains(leaf.DNSNames, n) {
			return tls.Certificate{}, fmt.Errorf("server certificate lacks SAN %s", n)
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return tls.Certificate{}, fmt.Errorf("server certificate lacks SAN %s", ip)
		}
	}
	pair.Leaf = leaf
	return pair, nil
}

func issueServer(dir string, ca *x509.Certificate, caKey crypto.Signer, now time.Time, dns []string, ips []net.IP) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: generate server key: %w", err)
	}
	notAfter := now.Add(ServerValidity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "tillwatch collector", Organization: []string{"tillwatch"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: create server certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeAtomic(filepath.Join(dir, ServerKeyFile), keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeAtomic(filepath.Join(dir, ServerCertFile), certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: %w", err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("pki: %w", err)
		}
	}
	return pair, nil
}

func parsePair(certPEM, keyPEM []byte) (*x509.Certificate, crypto.Signer, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("private key cannot sign")
	}
	return cert, signer, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	// 128 random bits; rand.Int cannot fail with crypto/rand on Linux.
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	return n.Add(n, big.NewInt(1))
}

// writeAtomic writes data to path via a temp file in the same directory and a
// rename, so a crash never leaves a truncated key or certificate behind.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("pki: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// CertPool returns a pool holding only the CA in pemBytes; it is what
// clients pin.
func CertPool(pemBytes []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bytes.TrimSpace(pemBytes)) {
		return nil, errors.New("no PEM certificate found")
	}
	return pool, nil
}

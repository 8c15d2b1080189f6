package localcluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

// Names of the files in <Dir>/pki. They are written once by Start and reused by
// RestartAPIServer, so clients holding the admin credentials keep working.
const (
	caCertFile      = "ca.crt"
	servingCertFile = "apiserver.crt"
	servingKeyFile  = "apiserver.key"
	saKeyFile       = "service-account.key"
)

// adminUser is the identity of the admin kubeconfig. system:masters bypasses
// RBAC, which kube-controller-manager needs too: with
// --use-service-account-credentials=false every controller acts as the
// manager's own identity, and the bootstrap role of that identity alone does
// not grant what the controllers do.
const (
	adminUser  = "localcluster-admin"
	adminGroup = "system:masters"
)

// certLifetime outlives any test run; hack/demo style sessions may last a day.
const certLifetime = 365 * 24 * time.Hour

// pki is the key material of one cluster: one CA signs both the serving
// certificate of kube-apiserver and the admin client certificate, which is all
// a single-user local cluster needs.
type pki struct {
	dir            string
	caPEM          []byte
	adminCertPEM   []byte
	adminKeyPEM    []byte
	servingCertPEM []byte
}

// newPKI generates the CA, the serving and admin certificates and the service
// account signing key, and writes what the processes read into dir.
func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the CA key: %w", err)
	}
	ca, err := certutil.NewSelfSignedCACert(certutil.Config{CommonName: "localcluster-ca"}, caKey)
	if err != nil {
		return nil, fmt.Errorf("creating the CA certificate: %w", err)
	}

	servingCert, servingKey, err := signLeaf(ca, caKey, &x509.Certificate{
		Subject: pkix.Name{CommonName: "kube-apiserver"},
		// 10.0.0.1 is the ClusterIP of the kubernetes Service in the
		// --service-cluster-ip-range that Start passes.
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.IPv4(10, 0, 0, 1)},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the serving certificate: %w", err)
	}
	adminCert, adminKey, err := signLeaf(ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: adminUser, Organization: []string{adminGroup}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the admin certificate: %w", err)
	}
	saKey, err := keyutil.MakeEllipticPrivateKeyPEM()
	if err != nil {
		return nil, fmt.Errorf("generating the service account key: %w", err)
	}

	caPEM, err := certutil.EncodeCertificates(ca)
	if err != nil {
		return nil, fmt.Errorf("encoding the CA certificate: %w", err)
	}
	p := &pki{dir: dir, caPEM: caPEM, adminCertPEM: adminCert, adminKeyPEM: adminKey, servingCertPEM: servingCert}
	for name, data := range map[string][]byte{
		caCertFile:      caPEM,
		servingCertFile: servingCert,
		servingKeyFile:  servingKey,
		saKeyFile:       saKey,
	} {
		if err := os.WriteFile(p.path(name), data, 0o600); err != nil {
			return nil, fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return p, nil
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

// signLeaf creates a key and a certificate from template signed by the CA and
// returns both PEM encoded.
func signLeaf(ca *x509.Certificate, caKey crypto.Signer, template *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating a key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, fmt.Errorf("generating a serial number: %w", err)
	}
	now := time.Now()
	template.SerialNumber = serial
	// An hour of slack keeps the certificate valid if clocks disagree a little.
	template.NotBefore = now.Add(-time.Hour)
	template.NotAfter = now.Add(certLifetime)
	template.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, template, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("signing the certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing the signed certificate: %w", err)
	}
	certPEM, err = certutil.EncodeCertificates(cert)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the certificate: %w", err)
	}
	keyPEM, err = keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding the key: %w", err)
	}
	return certPEM, keyPEM, nil
}

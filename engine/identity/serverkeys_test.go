package identity

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

// TestDataCredentialsCarryServerKeys: the keys nodes sign session
// handshakes with survive the Secret round trip in order (two during a
// rotation), a Secret without them loads with none, and a damaged entry is
// an error rather than fewer keys.
func TestDataCredentialsCarryServerKeys(t *testing.T) {
	op := mustKey(t)
	dc, err := NewDataCredentials(op, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	data, err := dc.SecretData()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := data[SecretServerKeys]; ok {
		t.Fatal("credentials without server keys wrote the entry")
	}
	back, err := DataCredentialsFromSecretData(data)
	if err != nil || back.ServerKeys != nil {
		t.Fatalf("no server keys: got %v, %v", back.ServerKeys, err)
	}

	oldKey, newKey := mustKey(t).PublicKey(), mustKey(t).PublicKey()
	dc.ServerKeys = []ed25519.PublicKey{oldKey, newKey}
	if data, err = dc.SecretData(); err != nil {
		t.Fatal(err)
	}
	if back, err = DataCredentialsFromSecretData(data); err != nil {
		t.Fatal(err)
	}
	if len(back.ServerKeys) != 2 || !back.ServerKeys[0].Equal(oldKey) || !back.ServerKeys[1].Equal(newKey) {
		t.Fatalf("server keys %x, want old then new", back.ServerKeys)
	}

	data[SecretServerKeys] = append(append([]byte{}, data[SecretServerKeys]...), "garbage"...)
	if _, err := DataCredentialsFromSecretData(data); !errors.Is(err, ErrBadKeyEncoding) {
		t.Fatalf("damaged server keys: %v", err)
	}
	priv, err := mustKey(t).MarshalPrivateKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	data[SecretServerKeys] = priv
	if _, err := DataCredentialsFromSecretData(data); !errors.Is(err, ErrBadKeyEncoding) {
		t.Fatalf("a private key as a server key: %v", err)
	}
}

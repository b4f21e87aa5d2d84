package identity

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

func TestDataCredentialsRoundTripAndDelegate(t *testing.T) {
	op := mustKey(t)
	v := NewVerifier([]ed25519.PublicKey{op.PublicKey()}, WithMaxDelegationDepth(1))
	dc, err := NewDataCredentials(op, 24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	data, err := dc.SecretData()
	if err != nil {
		t.Fatal(err)
	}
	back, err := DataCredentialsFromSecretData(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Check(v, t0); err != nil {
		t.Fatalf("fresh grant does not verify: %v", err)
	}
	tok, err := back.Token(ScopeIngest, time.Minute, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(tok, t0, ScopeIngest); err != nil {
		t.Fatalf("delegated token refused: %v", err)
	}
	if err := v.Verify(tok, t0, ScopeConsume); !errors.Is(err, ErrWrongScope) {
		t.Fatalf("ingest-only token passed for consume: %v", err)
	}
	if err := v.Verify(tok, t0.Add(2*time.Minute+DefaultClockSkew), ScopeIngest); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired token: %v", err)
	}
	if _, err := back.Token(ScopeAdmin, time.Minute, t0); !errors.Is(err, ErrEscalation) {
		t.Fatalf("data key delegated itself admin: %v", err)
	}
	// A grant signed by another (replaced) operator key is noticed.
	other := NewVerifier([]ed25519.PublicKey{mustKey(t).PublicKey()})
	if err := back.Check(other, t0); !errors.Is(err, ErrUntrustedIssuer) {
		t.Fatalf("grant under another operator key: %v", err)
	}
}

func TestDataCredentialsFromSecretDataRefusesMismatches(t *testing.T) {
	op := mustKey(t)
	a, err := NewDataCredentials(op, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewDataCredentials(op, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := a.SecretData()
	delete(data, SecretGrant)
	if _, err := DataCredentialsFromSecretData(data); !errors.Is(err, ErrMissingGrant) {
		t.Fatalf("no grant: %v", err)
	}
	data[SecretGrant] = []byte(b.Grant.EncodeHeader())
	if _, err := DataCredentialsFromSecretData(data); !errors.Is(err, ErrNotSubject) {
		t.Fatalf("grant of another key: %v", err)
	}
	data[SecretGrant] = []byte("!!")
	if _, err := DataCredentialsFromSecretData(data); !errors.Is(err, ErrMalformed) {
		t.Fatalf("garbage grant: %v", err)
	}
}

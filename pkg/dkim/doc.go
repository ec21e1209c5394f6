// Package dkim signs outgoing mail with DKIM (RFC 6376) on behalf of each
// sending domain, with RSA-SHA256 (RFC 8301) or Ed25519-SHA256 (RFC 8463)
// keys, one or several selectors per message. Signing itself is
// github.com/emersion/go-msgauth/dkim; this package owns the keys, the
// choice of header fields and the published key records.
//
// # Signatures
//
// Canonicalisation is relaxed/relaxed (RFC 6376 §3.4.2, §3.4.4), which
// survives the header refolding and trailing white space changes of relays.
// The signed header fields are those of RFC 6376 §5.4.1's list that the
// message carries, plus the fields mailbox providers read for bulk mail
// (MIME structure, Message-ID, List-Unsubscribe and List-Unsubscribe-Post,
// which RFC 8058 §4 requires to be signed, Feedback-ID), each as many times
// as it occurs. From is oversigned (listed once more than it occurs, RFC
// 6376 §5.4.2), so a second From cannot be added without breaking the
// signature. Signer.Headers and Signer.Oversign change the lists.
//
// Several selectors of one domain can sign a message, one DKIM-Signature
// field each, in the order the selectors are given: dual signing with an RSA and an Ed25519 key lets verifiers that
// know Ed25519 use it while the others fall back to RSA, and signing with
// an old and a new key covers a key rotation.
//
// # Keys on disk
//
// Keys are PEM files, PKCS#1 ("RSA PRIVATE KEY") or PKCS#8 ("PRIVATE
// KEY", RSA or Ed25519). LoadDir reads a folder of files named after the
// DNS name of their public record plus ".pem":
//
//	<selector>._domainkey.<domain>.pem     e.g. mw2026._domainkey.example.com.pem
//
// A flat folder is what one Kubernetes Secret mounted as a volume gives
// (secret keys cannot contain "/"): `kubectl create secret generic dkim
// --from-file=mw2026._domainkey.example.com.pem`. Names starting with "."
// (the Secret volume's ..data links) and files not ending in ".pem" are
// skipped; symbolic links are followed.
//
// Private keys never reach a log: Key and Signer print (String, GoString,
// slog's LogValue) as their domain, selector and algorithm only.
package dkim

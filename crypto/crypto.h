/*
 * crypto.h - kmsd's bottom layer: the error type every module shares, secure memory helpers,
 * randomness, Go-compatible base64, hashes, HMAC, HKDF and the AEAD ciphers Transit uses.
 *
 * This folder is the only place in kmsd that includes <openssl/...>. Every function here is
 * thread-safe and keeps no global state beyond what OpenSSL itself keeps.
 */
#ifndef KMS_CRYPTO_H
#define KMS_CRYPTO_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KMS_WUR __attribute__((warn_unused_result))
#define KMS_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ---- errors ------------------------------------------------------------------------------ */

/*
 * An error that carries the HTTP status it maps to. `wrapped` asks the renderer for Vault's
 * multierror form ("1 error occurred:\n\t* <msg>\n\n"), which OpenBao uses for errors that a
 * backend returns without an error response (500s and some 404/405s).
 */
struct kms_err {
    int status;
    bool wrapped;
    char msg[512];
};

/* Set a plain error (rendered verbatim). Always returns -1 so callers can `return kms_err_set`. */
int kms_err_set(struct kms_err *err, int status, const char *fmt, ...) KMS_PRINTF(3, 4);
/* Set an error rendered in multierror form. Returns -1. */
int kms_err_setw(struct kms_err *err, int status, const char *fmt, ...) KMS_PRINTF(3, 4);
void kms_err_clear(struct kms_err *err);

/* ---- memory ------------------------------------------------------------------------------ */

/* Wipe that the compiler cannot elide (explicit_bzero). */
void kms_memzero(void *p, size_t n);
/* Constant-time equality of two equal-length buffers: returns true when equal. */
bool kms_ct_eq(const void *a, const void *b, size_t n);
/* Constant-time equality of two NUL-terminated strings (time depends only on lengths). */
bool kms_ct_streq(const char *a, const char *b);
/* free() after wiping n bytes; NULL-safe, sets *p to NULL. */
void kms_free_wipe(void **p, size_t n);
/* a then b into dst (cap bytes, NUL-terminated) without a printf; false, dst untouched, when
 * they do not fit. */
bool kms_str_join(char *dst, size_t cap, const char *a, const char *b);
/* v in decimal into out, NUL-terminated, without a printf ('-' first when negative);
 * returns the number of characters (at most 20). */
size_t kms_u64_dec(uint64_t v, char out[21]);
size_t kms_i64_dec(int64_t v, char out[21]);

#ifdef KMS_TEST_HOOKS
/* Test hooks (KMS_TEST_HOOKS builds only): wait while the file `hold` exists, creating the
 * file `held` once to show it (server/ha.c, api/dispatch.c). */
void kms_test_hold(const char *hold, const char *held);
/* The same with the directory the environment variable `env` names: <dir>/hold, <dir>/held
 * (nothing when it is unset or the paths do not fit). */
void kms_test_hold_dir(const char *env);
#endif

/*
 * Memory for unwrapped keys: kms_secmem_init reserves a locked, non-dumpable heap (OpenSSL's
 * secure heap; returns -1 when the system refuses, e.g. RLIMIT_MEMLOCK, and allocations then
 * fall back to the ordinary heap). kms_secmem_alloc returns zeroed memory; kms_secmem_free
 * wipes n bytes and frees (NULL-safe). Thread-safe.
 */
int kms_secmem_init(size_t heap_size);
bool kms_secmem_locked(void);
void *kms_secmem_alloc(size_t n); /* secure heap up to half of it (the rest is OpenSSL's) */
void kms_secmem_free(void *p, size_t n);

/* ---- randomness and ids ------------------------------------------------------------------ */

int kms_rand_bytes(uint8_t *buf, size_t n) KMS_WUR;
/*
 * The same DRBG output as kms_rand_bytes, through a per-thread buffer refilled 4 KB at a time
 * (each byte handed out once and wiped; a forked child discards its copy). For nonces and
 * request ids, where the per-call cost of RAND_bytes dominated; keys use kms_rand_bytes.
 */
int kms_rand_fast(uint8_t *buf, size_t n) KMS_WUR;
/* Random RFC 4122 version-4 UUID, lower-case, into out[37]. */
int kms_uuid4(char out[37]) KMS_WUR;
/* n random characters from [0-9A-Za-z] into out (out[n] = '\0'). */
int kms_rand_base62(char *out, size_t n) KMS_WUR;

/* ---- encodings --------------------------------------------------------------------------- */

/* Length of the padded standard base64 encoding of n bytes (without the NUL). */
size_t kms_b64_encoded_len(size_t n);
/* Encode with the standard alphabet and '=' padding; out needs kms_b64_encoded_len(n) + 1. */
void kms_b64_encode(const uint8_t *in, size_t n, char *out);
/* Upper bound of decoded bytes for an input of len characters. */
size_t kms_b64_decoded_max(size_t len);
/*
 * Decode like Go's base64.StdEncoding: '=' padding required, CR/LF skipped anywhere,
 * non-zero trailing bits accepted. On error returns -1 and sets *err_at to the byte index Go
 * reports in "illegal base64 data at input byte <n>". out needs kms_b64_decoded_max(len).
 */
int kms_b64_decode(const char *in, size_t len, uint8_t *out, size_t *outlen,
                   size_t *err_at) KMS_WUR;
/* Same, allocating: *out is malloc'd (caller frees with kms_free_wipe), never NULL on success. */
int kms_b64_decode_alloc(const char *in, size_t len, uint8_t **out, size_t *outlen,
                         size_t *err_at) KMS_WUR;
/* Unpadded base64url (JWT segments). Returns -1 on any invalid character. */
int kms_b64url_decode_alloc(const char *in, size_t len, uint8_t **out, size_t *outlen) KMS_WUR;
/* Lower-case hex; out needs 2n + 1. */
void kms_hex_encode(const uint8_t *in, size_t n, char *out);
/* Strict hex decode of an even-length string; out needs len / 2. */
int kms_hex_decode(const char *in, size_t len, uint8_t *out) KMS_WUR;

/* ---- hashes, HMAC, HKDF ------------------------------------------------------------------ */

enum kms_hash {
    KMS_HASH_SHA1,
    KMS_HASH_SHA2_224,
    KMS_HASH_SHA2_256,
    KMS_HASH_SHA2_384,
    KMS_HASH_SHA2_512,
    KMS_HASH_SHA3_224,
    KMS_HASH_SHA3_256,
    KMS_HASH_SHA3_384,
    KMS_HASH_SHA3_512,
};
#define KMS_HASH_MAX_LEN 64

/* Parse a Vault hash name ("sha2-256", "sha3-512", "sha1"); -1 when unknown. */
int kms_hash_parse(const char *name, enum kms_hash *out) KMS_WUR;
const char *kms_hash_name(enum kms_hash h);
size_t kms_hash_len(enum kms_hash h);
int kms_hash(enum kms_hash h, const void *in, size_t n, uint8_t *out) KMS_WUR;
/* HMAC-<h>(key, in) into out (kms_hash_len(h) bytes). */
int kms_hmac(enum kms_hash h, const void *key, size_t keylen, const void *in, size_t n,
             uint8_t *out) KMS_WUR;
/*
 * A prepared HMAC-SHA256 key: the states after the key blocks are computed once, so each MAC
 * costs only the message (audit salts, the token HMAC key). Thread-safe: one key may be used
 * by any number of threads at once (each uses its own scratch context).
 */
struct kms_hmac_key;
int kms_hmac_key_create(const void *key, size_t keylen, struct kms_hmac_key **out) KMS_WUR;
/* HMAC-SHA256(key, in) into out. */
int kms_hmac_key_mac(const struct kms_hmac_key *k, const void *in, size_t n,
                     uint8_t out[32]) KMS_WUR;
/* NULL-safe; sets *k to NULL. */
void kms_hmac_key_destroy(struct kms_hmac_key **k);
/* HKDF-SHA256 (RFC 5869); an empty salt means HashLen zero bytes. */
int kms_hkdf_sha256(const uint8_t *ikm, size_t ikmlen, const uint8_t *salt, size_t saltlen,
                    const uint8_t *info, size_t infolen, uint8_t *out, size_t outlen) KMS_WUR;

/* ---- AEAD -------------------------------------------------------------------------------- */

enum kms_aead {
    KMS_AEAD_AES128_GCM,
    KMS_AEAD_AES256_GCM,
    KMS_AEAD_CHACHA20_POLY1305,
    KMS_AEAD_XCHACHA20_POLY1305, /* HChaCha20 subkey + ChaCha20-Poly1305 (24-byte nonce) */
};
#define KMS_AEAD_TAG_LEN 16
#define KMS_AEAD_MAX_KEY_LEN 32
#define KMS_AEAD_MAX_NONCE_LEN 24

size_t kms_aead_key_len(enum kms_aead a);
size_t kms_aead_nonce_len(enum kms_aead a);
/*
 * Encrypt pt into out as ciphertext || 16-byte tag (out needs ptlen + 16 bytes).
 * pt may be NULL when ptlen is 0; aad may be NULL when aadlen is 0.
 */
int kms_aead_seal(enum kms_aead a, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad,
                  size_t aadlen, const uint8_t *pt, size_t ptlen, uint8_t *out) KMS_WUR;
/*
 * Decrypt in (ciphertext || tag, inlen >= 16) into out (inlen - 16 bytes). Returns -1 on any
 * failure, having wiped out; the caller reports one generic message.
 */
int kms_aead_open(enum kms_aead a, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad,
                  size_t aadlen, const uint8_t *in, size_t inlen, uint8_t *out) KMS_WUR;
/*
 * Seal and open keep a few cipher contexts per thread, keyed by key (the key schedule is
 * computed once). kms_aead_forget_all wipes every thread's contexts and key copies at once:
 * called when keys leave storage, so a deleted key stays in no context. Any thread, any time.
 * kms_aead_key_cached says whether any thread's context holds this key (tests).
 */
void kms_aead_forget_all(void);
bool kms_aead_key_cached(const uint8_t *key, size_t keylen);

/* ---- AES key wrap with padding (wrap.c) ---------------------------------------------------- */

/* Wrapped size of n bytes under RFC 5649: n rounded up to 8, plus the 8-byte integrity block. */
#define KMS_KWP_WRAPPED_LEN(n) ((((n) + 7u) / 8u) * 8u + 8u)
/*
 * AES key wrap with padding (RFC 5649) under kek (16, 24 or 32 bytes), through OpenSSL's
 * EVP_aes_*_wrap_pad. wrap: in is 1..2^24 bytes, out needs KMS_KWP_WRAPPED_LEN(inlen) bytes.
 * unwrap: in is a multiple of 8 of at least 16 bytes, out needs inlen bytes; on any failure
 * (wrong key, tampered input) out is wiped and -1 returned, with no detail. Thread-safe.
 */
int kms_kwp_wrap(const uint8_t *kek, size_t keklen, const uint8_t *in, size_t inlen, uint8_t *out,
                 size_t *outlen) KMS_WUR;
int kms_kwp_unwrap(const uint8_t *kek, size_t keklen, const uint8_t *in, size_t inlen, uint8_t *out,
                   size_t *outlen) KMS_WUR;

/* ---- time -------------------------------------------------------------------------------- */

/* Wall clock as unix seconds + nanoseconds. */
void kms_now(int64_t *sec, int32_t *nsec);
/*
 * Parse a duration as Vault does: a bare integer is seconds; otherwise Go's
 * time.ParseDuration syntax ("1h30m", "90s", "1.5h") plus a "d" unit for days. The result
 * is truncated to whole seconds. Returns -1 when invalid or out of range: beyond Go's
 * time.Duration, KMS_DURATION_MAX_SEC either way (so seconds * 1e9 always fits an int64).
 */
#define KMS_DURATION_MAX_SEC 9223372036LL
int kms_duration_parse(const char *s, int64_t *out) KMS_WUR;
/* The same syntax in whole milliseconds (truncated): "1500ms" and "1.5s" are 1500. */
int kms_duration_parse_ms(const char *s, int64_t *out) KMS_WUR;
/* A whole decimal int64 ("-12", "+3"); false on empty input, junk or overflow. */
bool kms_int_parse(const char *s, int64_t *out);

/* ---- UTF-8 (text.c) ---------------------------------------------------------------------- */

/* The UTF-8 sequence at s[0, n) (n >= 1): its length and code point (*cp), 1 for ASCII; 0 when
 * it is not well-formed (RFC 3629: no overlong forms, surrogates or code points past U+10FFFF). */
size_t kms_utf8_next(const unsigned char *s, size_t n, uint32_t *cp);
/* s[0, n) is well-formed UTF-8 (NUL bytes are; callers that refuse them check apart). */
bool kms_utf8_valid(const char *s, size_t n);
/* A string cut at a byte count (a truncated snprintf) may end inside a UTF-8 character: ends s
 * (len bytes, NUL-terminated) before that partial character. Returns the new length. */
size_t kms_utf8_cut(char *s, size_t len);
/* A malloc'd copy of s with each byte that is not part of well-formed UTF-8 replaced by U+FFFD
 * (as Go's encoders do), for text that must become a JSON string; NULL when out of memory. */
char *kms_utf8_fix(const char *s);
/* RFC 3339 in UTC with nanoseconds, trailing zeros trimmed (Go's RFC3339Nano); out[40]. */
void kms_time_rfc3339(int64_t sec, int32_t nsec, char out[40]);

/* ---- JWS verification (jws.c) ------------------------------------------------------------ */

/* The only JWS algorithms kmsd verifies. There is deliberately no HS* and no "none". */
enum kms_jws_alg {
    KMS_JWS_RS256,
    KMS_JWS_RS384,
    KMS_JWS_RS512,
    KMS_JWS_PS256,
    KMS_JWS_PS384,
    KMS_JWS_PS512,
    KMS_JWS_ES256,
    KMS_JWS_ES384,
};

enum kms_pubkey_kind {
    KMS_PUBKEY_RSA,  /* at least 2048 bits */
    KMS_PUBKEY_P256, /* NIST P-256 */
    KMS_PUBKEY_P384, /* NIST P-384 */
};

/* A verification key; immutable once built, so it may be shared between threads. */
struct kms_pubkey;

/*
 * Parse a JOSE "alg" value, case-sensitively. Returns -1 for every name outside the enum
 * ("none", "None", "HS256", "ES512", "EdDSA", ...), so callers refuse those before any
 * verification.
 */
int kms_jws_alg_parse(const char *name, enum kms_jws_alg *out) KMS_WUR;
const char *kms_jws_alg_name(enum kms_jws_alg alg);
/* True when `alg` may be verified with a key of `kind` (RS/PS: RSA, ES256: P-256, ...). */
bool kms_jws_alg_fits(enum kms_jws_alg alg, enum kms_pubkey_kind kind);

/*
 * Build a key from one PEM text: "PUBLIC KEY", "RSA PUBLIC KEY" or "CERTIFICATE" (its subject
 * key is used); the first PEM block decides, so private keys are refused. RSA keys under
 * 2048 bits and curves other than P-256/P-384 are refused. *out is freed with
 * kms_pubkey_free. Returns -1 on any failure.
 */
int kms_pubkey_from_pem(const char *pem, size_t len, struct kms_pubkey **out) KMS_WUR;
/* RSA key from the big-endian modulus and exponent of a JWK ("n", "e"). */
int kms_pubkey_from_rsa(const uint8_t *n, size_t nlen, const uint8_t *e, size_t elen,
                        struct kms_pubkey **out) KMS_WUR;
/* EC key from a JWK's "x" and "y" (each exactly the coordinate size); the point is checked. */
int kms_pubkey_from_ec(enum kms_pubkey_kind curve, const uint8_t *x, size_t xlen, const uint8_t *y,
                       size_t ylen, struct kms_pubkey **out) KMS_WUR;
enum kms_pubkey_kind kms_pubkey_kind(const struct kms_pubkey *k);
/* NULL-safe; sets *k to NULL. */
void kms_pubkey_free(struct kms_pubkey **k);

/*
 * Verify a JWS signature over msg (the ASCII "<header>.<payload>"). ES signatures are the raw
 * r || s of the JWS encoding. Returns 0 only for a valid signature made with an algorithm
 * that fits the key; -1 for everything else, without saying why.
 */
int kms_jws_verify(const struct kms_pubkey *k, enum kms_jws_alg alg, const void *msg, size_t msglen,
                   const uint8_t *sig, size_t siglen) KMS_WUR;

/* ---- handler threads (pool.c) ------------------------------------------------------------ */

/* Up to max threads, started on demand, that run fn(arg) jobs in order. */
struct kms_pool;
int kms_pool_create(size_t max, struct kms_pool **out) KMS_WUR;
/* 0 when queued; -1 when it cannot be (stopping, no thread, no memory): run it where you are. */
int kms_pool_submit(struct kms_pool *o, void (*fn)(void *arg), void *arg) KMS_WUR;
/* Runs the jobs still queued, then joins the threads. */
void kms_pool_destroy(struct kms_pool **o);

/* ---- TLS for the server ------------------------------------------------------------------ */

struct kms_tls;
struct bufferevent;
struct event_base;

/*
 * A server TLS context from PEM files: TLS 1.2+ with ECDHE AEAD suites, the certificate
 * chain and its key, and optionally a client CA (clients must present a certificate signed by
 * it when require_client_cert). Thread-safe. Destroy with kms_tls_destroy.
 */
int kms_tls_create(const char *cert, const char *key, const char *client_ca,
                   bool require_client_cert, struct kms_tls **out, struct kms_err *err) KMS_WUR;
/* Re-read the files; new connections use them, existing ones keep theirs. On error the old
 * context stays in use: a file that does not load, a key that does not match, and a
 * certificate that has expired or is not yet valid. */
int kms_tls_reload(struct kms_tls *t, struct kms_err *err) KMS_WUR;
/* -1 (err says which date) when the certificate in use has expired or is not yet valid. */
int kms_tls_check_validity(struct kms_tls *t, struct kms_err *err) KMS_WUR;
/* A server-side TLS bufferevent on an accepted socket (owns fd); NULL on failure. */
struct bufferevent *kms_tls_bufferevent(struct kms_tls *t, struct event_base *base, int fd);
void kms_tls_destroy(struct kms_tls **t);

/* ---- TLS for clients (tls_client.c) ------------------------------------------------------ */

/* What a client connection trusts and presents. Strings are borrowed for the call only. */
struct kms_tls_client_opts {
    const char *ca_file;     /* PEM CA bundle to verify the server; NULL with ca_path NULL =
                                the system store */
    const char *ca_path;     /* directory of PEM CA certificates (every file under it, as
                                OpenBao reads VAULT_CAPATH), or NULL; with ca_file both */
    const char *cert_file;   /* client certificate chain (PEM), or NULL for none */
    const char *key_file;    /* its private key (PEM); required with cert_file */
    const char *server_name; /* host name or IP literal the certificate must match (and SNI
                                for names) */
    bool insecure;           /* skip certificate and name verification (testing only) */
};

/* One TLS client connection over a socket the caller owns. */
struct kms_tls_conn;

/*
 * Handshake (TLS 1.2+) over the connected socket fd, which may be non-blocking: waits with
 * poll(2) until deadline_ms (CLOCK_MONOTONIC milliseconds), a deadline that also bounds every
 * later read and write on the connection. Unless o->insecure, the server's chain must verify
 * against the CA file/path (else the system store) and match o->server_name. On failure err
 * says why (a verification failure names the X509 reason) and nothing is left to free. fd
 * stays the caller's: kms_tls_client_close does not close it. Not thread-safe per connection.
 */
int kms_tls_client_connect(int fd, const struct kms_tls_client_opts *o, int64_t deadline_ms,
                           struct kms_tls_conn **out, struct kms_err *err) KMS_WUR;
/* Read up to n bytes: > 0 bytes read, 0 at end of stream, -1 on error or timeout (errno). */
ssize_t kms_tls_client_read(struct kms_tls_conn *c, void *buf, size_t n);
/* Write up to n bytes: bytes written (> 0), or -1 on error or timeout (errno). */
ssize_t kms_tls_client_write(struct kms_tls_conn *c, const void *buf, size_t n);
/* A new deadline for the reads and writes that follow (a kept connection's next exchange). */
void kms_tls_client_set_deadline(struct kms_tls_conn *c, int64_t deadline_ms);
/* Send close_notify when the session is healthy and free it; NULL-safe, sets *c to NULL. */
void kms_tls_client_close(struct kms_tls_conn **c);

/* ---- streaming AEAD and hashes (aead_stream.c) ------------------------------------------- */

/* One AEAD message processed in pieces of any size. */
struct kms_aead_stream;

/*
 * Start encrypting (`encrypt`) or decrypting one message with AES-128/256-GCM or
 * ChaCha20-Poly1305 (XChaCha20-Poly1305 is refused: -1). key is kms_aead_key_len(a) bytes and
 * nonce kms_aead_nonce_len(a) bytes; both are copied into the cipher state, so the caller may
 * wipe them at once. aad may be NULL when aadlen is 0. The concatenated update outputs plus
 * the final tag equal kms_aead_seal's ciphertext || tag. Free *out with
 * kms_aead_stream_destroy (which cleanses the key schedule).
 */
int kms_aead_stream_create(enum kms_aead a, bool encrypt, const uint8_t *key, const uint8_t *nonce,
                           const uint8_t *aad, size_t aadlen, struct kms_aead_stream **out) KMS_WUR;
/* Transform n bytes of in into out (n bytes; in == out is allowed). */
int kms_aead_stream_update(struct kms_aead_stream *s, const uint8_t *in, size_t n,
                           uint8_t *out) KMS_WUR;
/* Encrypting: end the message and write its 16-byte tag. Once per stream. */
int kms_aead_stream_seal_final(struct kms_aead_stream *s, uint8_t tag[KMS_AEAD_TAG_LEN]) KMS_WUR;
/*
 * Decrypting: end the message and check its tag; -1 when it does not match. Update has
 * already released plaintext by then: on -1 the caller must discard all of it (kmsctl deletes
 * the partial output file).
 */
int kms_aead_stream_open_final(struct kms_aead_stream *s,
                               const uint8_t tag[KMS_AEAD_TAG_LEN]) KMS_WUR;
/* NULL-safe; sets *s to NULL. */
void kms_aead_stream_destroy(struct kms_aead_stream **s);

/* An incremental hash (the kms_hash algorithms). */
struct kms_hash_stream;

int kms_hash_stream_create(enum kms_hash h, struct kms_hash_stream **out) KMS_WUR;
int kms_hash_stream_update(struct kms_hash_stream *s, const void *in, size_t n) KMS_WUR;
/* The digest (kms_hash_len bytes) into out; once per stream (until a reset). */
int kms_hash_stream_final(struct kms_hash_stream *s, uint8_t *out) KMS_WUR;
/* Start over with the same algorithm, as if just created (no allocation): a stream can be
 * kept and reused, e.g. per thread. */
int kms_hash_stream_reset(struct kms_hash_stream *s) KMS_WUR;
/* NULL-safe; sets *s to NULL. */
void kms_hash_stream_destroy(struct kms_hash_stream **s);

#endif

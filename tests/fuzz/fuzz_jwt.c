/*
 * fuzz_jwt.c - JWT parsing and verification on arbitrary tokens, against a key set holding an
 * RSA and an EC public key: never a crash, and nothing unsigned (none, HS*) is ever accepted.
 */
#include "auth/auth.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char rsa_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                              "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
                              "4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n"
                              "+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh\n"
                              "kd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ\n"
                              "0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdg\n"
                              "cKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbc\n"
                              "mwIDAQAB\n"
                              "-----END PUBLIC KEY-----\n";
static const char ec_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                             "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\n"
                             "q9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n"
                             "-----END PUBLIC KEY-----\n";

static struct kms_keyset *ks;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_err err;
    json_t *claims = NULL;
    char *jwt;
    if (ks == NULL) {
        if (kms_keyset_create(&ks) != 0 || kms_keyset_add_pem(ks, rsa_pem, 0, &err) != 0 ||
            kms_keyset_add_pem(ks, ec_pem, 1, &err) != 0) {
            abort();
        }
    }
    jwt = malloc(size + 1);
    if (jwt == NULL) {
        return 0;
    }
    memcpy(jwt, data, size);
    jwt[size] = '\0';
    if (kms_jwt_verify(jwt, ks, &claims, &err) == 0) {
        /* a random input carrying a valid RS/ES signature by these keys is impossible */
        abort();
    }
    if (claims != NULL) {
        abort(); /* failure must not hand out claims */
    }
    free(jwt);
    return 0;
}

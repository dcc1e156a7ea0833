/*
 * test_bigint.c - crypto/bigint.c: an RSA version's Go big integers against values computed
 * independently (Python's integers and cryptography's CRT helpers for the fixed key of
 * test_sign.c), a private exponent computed modulo phi (older Go) accepted, every ECDSA curve
 * both ways, and the refusals: wrong exponent, d, n, CRT values, primes of the wrong size,
 * points off the curve, scalars out of range, text that is not plain decimal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/keyring.h"

/* The RSA-2048 key of test_sign.c (p, q in hex) and its values in decimal. */
static const char RSA_P[] =
    "f3c15b36e9af22a78b16f5ea28b9e48f74c5c05f0c76088748b5d5d7fd44182e7331ab289c091973096578fe"
    "06ef9b68e0f18702bab19a94fe90eeae8bd8287b7bf9145b37ccf92b5147f144da8bae97709ce85f2f638e19"
    "57528f4f622218f4543f01015d26ebed5391a147a3872d140d41390caca5999cfd63e1c23800d099";
static const char RSA_Q[] =
    "e8891e9a1b3927c7baa1e113fb81afd516f8f3dd1d80b5071ebf99257621d3b8cfdb142fcb67a292bd6cbf96"
    "2bdca62b3806d313dee367cc8a84214431886897c714b75d854b8257db3d00b18edb05a9db5c0a72ab39bc57"
    "803d682dc21b5d00f4dbce46b18c6507465d7c7d6c214c6d1149b2adc8de9b1fb0c08e42df24ce6b";
static const char RSA_N[] =
    "2795083246251946725732004630503843712441186880651653703236877398048298016564849532196663"
    "4206335057735119594565226202202611054157415852775861726010028963613297465263354327690222"
    "6329110008677320292047534012996660979365783869367594227521254197447055459840617206467888"
    "8818419447810227309498790870409291970040965448305432644707236155957097933703699265249448"
    "1357886684273614764717943347008367119670723864177157492057172700433269040917060176485625"
    "9491505337139345413184924431393087581142988337101898629085006957768569274018757040865053"
    "7302231536615928508439093056742322600890221002473278880823275298488533991149532431399678"
    "7";
static const char RSA_D_PHI[] =
    "1208414921331502182383853688766588457639327236162533470062921467206318201952308568369932"
    "4253510193110256474852543131562457567610605013542750906278410068434917228142452073191857"
    "5473534079769644523778549959934806173449351055963217950815374771967970297681066388880497"
    "4835300618494209081699478775686663696524722127418390580917827415232745821895325206486914"
    "8212119561548154493225226269013784686559209582562523821341706230803959420954175488875245"
    "6981390252256962383049087494154154589913081586830019833170034114711793592427611224807837"
    "3948204650395143065559592682196518440765785314681468074509110311535281793160817947135363"
    "3";
static const char RSA_DP[] =
    "1303010453810731671198442669499183776318064374672909417431193837882485772999077831883936"
    "0821956891791531577778474680276300772453448927194232149168718329572555334080525388971337"
    "2643365202084855744288776438592173512591257893895331172477127710555855845477839256401715"
    "107974080295979393046062361464473446536807833";
static const char RSA_DQ[] =
    "5662662043912178316924866222255635600180073386574088614045949431879916723986193676244646"
    "2533916670173401604925736175580243163146585363357859871090766254834719074407663523936655"
    "1003829173483011014174910136178050471569974839642115669243713676749028089145774098851116"
    "82856943658396358444674996301826164548822119";
static const char RSA_QINV[] =
    "1541337938068436693961294322813587690414519610487381037782464495392879306907329731883022"
    "5656068925951287145067637987486125448718531819096539550422636100388683503946422430091350"
    "9767054579001638445585800870793111986608121992647607285279948401335291914037032534554506"
    "013866499594981812221638119802686905930397862";
static const char RSA_P_DEC[] =
    "1711707913796506675526315164284070780102968288058258623948929634855468542264638775445038"
    "3655486957392242879449736317049207715614297387029773945360105297063411953128653459019313"
    "4817860154523746535578054109242824580462492104315947785095582568636355199444389571785347"
    "532147313042105503859764456759951016570441881";
static const char RSA_Q_DEC[] =
    "1632920677484368505989813691239352269674842564068755425259512420984353862541836471861862"
    "0209817823791764073489760952783043939733082962812443623758857517679865287893056911903183"
    "7255854061435984040286800218219302564154008188787016916509989278096981800846335183334384"
    "844431535906205048769686506473920066266386027";
static const char RSA_D_PHI_PLUS1[] =
    "1208414921331502182383853688766588457639327236162533470062921467206318201952308568369932"
    "4253510193110256474852543131562457567610605013542750906278410068434917228142452073191857"
    "5473534079769644523778549959934806173449351055963217950815374771967970297681066388880497"
    "4835300618494209081699478775686663696524722127418390580917827415232745821895325206486914"
    "8212119561548154493225226269013784686559209582562523821341706230803959420954175488875245"
    "6981390252256962383049087494154154589913081586830019833170034114711793592427611224807837"
    "3948204650395143065559592682196518440765785314681468074509110311535281793160817947135363"
    "4";
static const char RSA_N_PLUS2[] =
    "2795083246251946725732004630503843712441186880651653703236877398048298016564849532196663"
    "4206335057735119594565226202202611054157415852775861726010028963613297465263354327690222"
    "6329110008677320292047534012996660979365783869367594227521254197447055459840617206467888"
    "8818419447810227309498790870409291970040965448305432644707236155957097933703699265249448"
    "1357886684273614764717943347008367119670723864177157492057172700433269040917060176485625"
    "9491505337139345413184924431393087581142988337101898629085006957768569274018757040865053"
    "7302231536615928508439093056742322600890221002473278880823275298488533991149532431399678"
    "9";

static void rsa_version(struct kms_key_version *kv)
{
    memset(kv, 0, sizeof(*kv));
    assert_int_equal(kms_hex_decode(RSA_P, strlen(RSA_P), kv->key), 0);
    assert_int_equal(kms_hex_decode(RSA_Q, strlen(RSA_Q), kv->key + 128), 0);
    kv->key_len = 256;
}

static void test_rsa_get(void **state)
{
    (void)state;
    struct kms_key_version kv;
    char *b[KMS_BIG_COUNT];
    rsa_version(&kv);
    assert_int_equal(kms_key_bigints_get(KMS_KEY_RSA2048, &kv, b), 0);
    assert_string_equal(b[KMS_BIG_RSA_N], RSA_N);
    assert_string_equal(b[KMS_BIG_RSA_P], RSA_P_DEC);
    assert_string_equal(b[KMS_BIG_RSA_Q], RSA_Q_DEC);
    assert_string_equal(b[KMS_BIG_RSA_DP], RSA_DP);
    assert_string_equal(b[KMS_BIG_RSA_DQ], RSA_DQ);
    assert_string_equal(b[KMS_BIG_RSA_QINV], RSA_QINV);
    assert_null(b[KMS_BIG_EC_D]);

    /* and back: the same p || q */
    struct kms_key_version back;
    struct kms_err err;
    memset(&back, 0, sizeof(back));
    assert_int_equal(
        kms_key_bigints_put(KMS_KEY_RSA2048, (const char *const *)b, 65537, &back, &err), 0);
    assert_int_equal(back.key_len, 256);
    assert_memory_equal(back.key, kv.key, 256);
    kms_key_bigints_free(b);
    assert_null(b[KMS_BIG_RSA_N]);
    /* the wrong type for the material */
    assert_int_equal(kms_key_bigints_get(KMS_KEY_RSA3072, &kv, b), -1);
    assert_int_equal(kms_key_bigints_get(KMS_KEY_AES256_GCM96, &kv, b), -1);
}

static void rsa_in(const char *in[KMS_BIG_COUNT])
{
    for (size_t i = 0; i < KMS_BIG_COUNT; i++) {
        in[i] = NULL;
    }
    in[KMS_BIG_RSA_N] = RSA_N;
    in[KMS_BIG_RSA_D] = RSA_D_PHI;
    in[KMS_BIG_RSA_P] = RSA_P_DEC;
    in[KMS_BIG_RSA_Q] = RSA_Q_DEC;
}

static void rsa_refused(const char *const in[KMS_BIG_COUNT], int64_t e, const char *msg)
{
    struct kms_key_version kv;
    struct kms_err err;
    memset(&kv, 0, sizeof(kv));
    assert_int_equal(kms_key_bigints_put(KMS_KEY_RSA2048, in, e, &kv, &err), -1);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.msg, msg);
    assert_int_equal(kv.key_len, 0);
}

static void test_rsa_put(void **state)
{
    (void)state;
    const char *in[KMS_BIG_COUNT];
    struct kms_key_version kv, want;
    struct kms_err err;
    rsa_version(&want);

    /* d modulo phi (what older Go computed), without precomputed values */
    rsa_in(in);
    memset(&kv, 0, sizeof(kv));
    assert_int_equal(kms_key_bigints_put(KMS_KEY_RSA2048, in, 65537, &kv, &err), 0);
    assert_memory_equal(kv.key, want.key, 256);
    /* with them */
    in[KMS_BIG_RSA_DP] = RSA_DP;
    in[KMS_BIG_RSA_DQ] = RSA_DQ;
    in[KMS_BIG_RSA_QINV] = RSA_QINV;
    memset(&kv, 0, sizeof(kv));
    assert_int_equal(kms_key_bigints_put(KMS_KEY_RSA2048, in, 65537, &kv, &err), 0);
    assert_memory_equal(kv.key, want.key, 256);

    rsa_refused(in, 3, "RSA keys with a public exponent other than 65537 are not supported");
    rsa_in(in);
    in[KMS_BIG_RSA_D] = RSA_D_PHI_PLUS1;
    rsa_refused(in, 65537, "invalid RSA key");
    rsa_in(in);
    in[KMS_BIG_RSA_N] = RSA_N_PLUS2;
    rsa_refused(in, 65537, "invalid RSA key");
    rsa_in(in);
    in[KMS_BIG_RSA_QINV] = RSA_DP;
    rsa_refused(in, 65537, "invalid RSA key");
    rsa_in(in);
    in[KMS_BIG_RSA_DP] = RSA_DQ;
    rsa_refused(in, 65537, "invalid RSA key");
    /* p and q swapped: Qinv no longer fits */
    rsa_in(in);
    in[KMS_BIG_RSA_P] = RSA_Q_DEC;
    in[KMS_BIG_RSA_Q] = RSA_P_DEC;
    in[KMS_BIG_RSA_QINV] = RSA_QINV;
    rsa_refused(in, 65537, "invalid RSA key");
    /* missing or malformed numbers */
    rsa_in(in);
    in[KMS_BIG_RSA_D] = NULL;
    rsa_refused(in, 65537, "invalid RSA key");
    in[KMS_BIG_RSA_D] = "-5";
    rsa_refused(in, 65537, "invalid RSA key");
    in[KMS_BIG_RSA_D] = "12 34";
    rsa_refused(in, 65537, "invalid RSA key");
    in[KMS_BIG_RSA_D] = "0x1234";
    rsa_refused(in, 65537, "invalid RSA key");
    /* a prime of the wrong size (the layout keeps two halves) */
    rsa_in(in);
    in[KMS_BIG_RSA_P] = "65537";
    rsa_refused(in, 65537, "RSA keys must have two primes of half the modulus each");
    /* a 2048-bit key is not an rsa-3072 key */
    rsa_in(in);
    memset(&kv, 0, sizeof(kv));
    assert_int_equal(kms_key_bigints_put(KMS_KEY_RSA3072, in, 65537, &kv, &err), -1);
    assert_string_equal(err.msg, "RSA keys must have two primes of half the modulus each");
}

static void test_ecdsa_both_ways(void **state)
{
    (void)state;
    static const enum kms_key_type types[] = {KMS_KEY_ECDSA_P256, KMS_KEY_ECDSA_P384,
                                              KMS_KEY_ECDSA_P521};
    static const size_t fields[] = {32, 48, 66};
    for (size_t i = 0; i < 3; i++) {
        struct kms_key_policy p;
        struct kms_key_version kv, back;
        struct kms_err err;
        char *b[KMS_BIG_COUNT];
        size_t f = fields[i];
        assert_int_equal(kms_key_policy_init(&p, types[i]), 0);
        assert_int_equal(kms_key_version_generate(&p, 1, &kv), 0);
        assert_int_equal(kms_key_bigints_get(types[i], &kv, b), 0);
        assert_non_null(b[KMS_BIG_EC_X]);
        assert_null(b[KMS_BIG_RSA_N]);
        memset(&back, 0, sizeof(back));
        assert_int_equal(kms_key_bigints_put(types[i], (const char *const *)b, 0, &back, &err), 0);
        assert_int_equal(back.key_len, 3 * f + 1);
        assert_memory_equal(back.key, kv.key, 3 * f + 1);

        /* another scalar for the same point, a point off the curve, a scalar too wide */
        char *saved = b[KMS_BIG_EC_D];
        b[KMS_BIG_EC_D] = (char *)"12345";
        assert_int_equal(kms_key_bigints_put(types[i], (const char *const *)b, 0, &back, &err), -1);
        assert_int_equal(err.status, 400);
        b[KMS_BIG_EC_D] = saved;
        char *y = b[KMS_BIG_EC_Y];
        b[KMS_BIG_EC_Y] = (char *)"7";
        assert_int_equal(kms_key_bigints_put(types[i], (const char *const *)b, 0, &back, &err), -1);
        b[KMS_BIG_EC_Y] = y;
        char wide[400];
        snprintf(wide, sizeof(wide), "%s000000000000000000000000", b[KMS_BIG_EC_D]);
        b[KMS_BIG_EC_D] = wide;
        assert_int_equal(kms_key_bigints_put(types[i], (const char *const *)b, 0, &back, &err), -1);
        b[KMS_BIG_EC_D] = NULL;
        assert_int_equal(kms_key_bigints_put(types[i], (const char *const *)b, 0, &back, &err), -1);
        char msg[64];
        snprintf(msg, sizeof(msg), "invalid %s key", kms_key_type_name(types[i]));
        assert_string_equal(err.msg, msg);
        b[KMS_BIG_EC_D] = saved;
        kms_key_bigints_free(b);
        kms_memzero(&kv, sizeof(kv));
    }
}

static void test_other_types(void **state)
{
    (void)state;
    struct kms_key_version kv;
    struct kms_err err;
    const char *in[KMS_BIG_COUNT] = {NULL};
    memset(&kv, 0, sizeof(kv));
    assert_int_equal(kms_key_bigints_put(KMS_KEY_ED25519, in, 0, &kv, &err), -1);
    assert_int_equal(err.status, 400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rsa_get),
        cmocka_unit_test(test_rsa_put),
        cmocka_unit_test(test_ecdsa_both_ways),
        cmocka_unit_test(test_other_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

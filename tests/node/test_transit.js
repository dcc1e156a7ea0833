'use strict';
// test_transit.js - kmsd's Transit engine driven by node-vault (npm), the Node.js Vault
// client, against the real kmsd on a loopback port (kmsd.js). node-vault's own transit helpers
// (transitCreateKey/ReadKey/ListKeys/DeleteKey, encryptData/decryptData/rewrapData) are used
// where it has them, vault.write/read/list/delete elsewhere. Results are checked with Node's
// own crypto: signatures verify with the public keys kmsd reads back, exported keys decrypt
// and sign as kmsd does, keys made by Node are imported (BYOK) and used from both sides.
// derive-key is checked against node:crypto's own ECDH + HKDF, and keys/:name/csr against
// openssl, which issues the certificate that set-certificate stores.
//
// Run: node test_transit.js (ctest: integration_node_vault; `make deps` runs npm ci here).

const { describe, test: nodeTest, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Kmsd } = require('./kmsd.js');

let nodeVault;
try {
    nodeVault = require('node-vault');
} catch (e) {
    throw new Error(`node-vault is not installed in tests/node (run \`make deps\`, which runs ` +
        `npm ci there): ${e.message}`);
}

const b64 = (s) => Buffer.from(s).toString('base64');
const unb64 = (s) => Buffer.from(s, 'base64');
const payload = (vaultString) => unb64(vaultString.split(':')[2]);

let seq = 0;
const uniq = (prefix) => `${prefix}-${++seq}-${crypto.randomBytes(3).toString('hex')}`;

// The rejection of a node-vault call: an Error whose message is the first of the server's
// errors, with the status and the body. `errors` is the exact list expected.
async function rejects(promise, status, errors) {
    let err = null;
    try {
        await promise;
    } catch (e) {
        err = e;
    }
    assert.ok(err instanceof Error, `expected a rejection with HTTP ${status}`);
    assert.ok(err.response, `not an API error: ${err.stack}`);
    assert.equal(err.response.statusCode, status, JSON.stringify(err.response.body));
    assert.deepEqual(err.response.body, { errors });
    assert.equal(err.message, errors.length > 0 ? errors[0] : `Status ${status}`);
    return err;
}

// OpenBao's layout of a 500 that wraps an error.
const wrapped = (msg) => `1 error occurred:\n\t* ${msg}\n\n`;

// BYOK: base64(RSA-OAEP-SHA256(ephemeral AES-256 key) || AES-KWP(ephemeral, material)).
function wrapForImport(wrappingPem, material) {
    const eph = crypto.randomBytes(32);
    const kwp = crypto.createCipheriv('id-aes256-wrap-pad', eph, Buffer.from('A65959A6', 'hex'));
    const wrappedKey = Buffer.concat([kwp.update(material), kwp.final()]);
    const wrappedEph = crypto.publicEncrypt({
        key: wrappingPem, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256',
    }, eph);
    return Buffer.concat([wrappedEph, wrappedKey]).toString('base64');
}

// AES-256-GCM decryption of a vault:vN: ciphertext (nonce 12 || ciphertext || tag 16).
function gcmOpen(key, ciphertext) {
    const raw = payload(ciphertext);
    const d = crypto.createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
    d.setAuthTag(raw.subarray(raw.length - 16));
    return Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]);
}

function ed25519Public(rawB64) {
    return crypto.createPublicKey({
        key: { kty: 'OKP', crv: 'Ed25519', x: unb64(rawB64).toString('base64url') },
        format: 'jwk',
    });
}

describe('node-vault against kmsd', () => {
    const server = new Kmsd();
    let vault;

    // node:test's test(), with the kmsd log's tail added to a failure
    const test = (title, fn) => nodeTest(title, async () => {
        try {
            await fn();
        } catch (e) {
            e.message += `\n${server.logTail(40)}`;
            throw e;
        }
    });

    before(async () => {
        await server.start();
        vault = nodeVault({ endpoint: server.addr, token: server.token });
    });

    after(async () => {
        await server.stop();
    });

    test('keys: create, read, list, rotate, config, delete', async () => {
        const name = uniq('keys');
        let r = await vault.transitCreateKey({ name, type: 'aes256-gcm96' });
        assert.equal(r.data.name, name);
        assert.equal(r.data.type, 'aes256-gcm96');
        assert.equal(r.data.latest_version, 1);
        assert.equal(r.data.deletion_allowed, false);

        r = await vault.transitReadKey({ name });
        assert.deepEqual(Object.keys(r.data.keys), ['1']);
        assert.equal(r.data.supports_encryption, true);
        assert.equal(r.data.supports_signing, false);

        r = await vault.write(`transit/keys/${name}/rotate`, {});
        assert.equal(r.data.latest_version, 2);
        r = await vault.write(`transit/keys/${name}/rotate`, {});
        assert.deepEqual(Object.keys(r.data.keys).sort(), ['1', '2', '3']);

        r = await vault.write(`transit/keys/${name}/config`,
            { min_decryption_version: 2, min_encryption_version: 3 });
        assert.equal(r.data.min_decryption_version, 2);
        assert.equal(r.data.min_encryption_version, 3);
        r = await vault.transitReadKey({ name });
        assert.deepEqual(Object.keys(r.data.keys).sort(), ['2', '3']);

        const other = uniq('keys-ed');
        await vault.transitCreateKey({ name: other, type: 'ed25519' });
        r = await vault.transitListKeys();
        assert.ok(r.data.keys.includes(name) && r.data.keys.includes(other), r.data.keys);
        assert.deepEqual(r.data.keys, [...r.data.keys].sort());
        r = await vault.list('transit/keys');
        assert.ok(r.data.keys.includes(name));

        await rejects(vault.transitDeleteKey({ name }), 400,
            [`error deleting policy ${name}: deletion is not allowed for this key`]);
        await vault.write(`transit/keys/${name}/config`, { deletion_allowed: true });
        await vault.transitDeleteKey({ name });
        await rejects(vault.transitReadKey({ name }), 404, []);
        r = await vault.transitListKeys();
        assert.ok(!r.data.keys.includes(name));
    });

    test('encrypt, decrypt, rewrap and datakey, one item and batches', async () => {
        const name = uniq('enc');
        await vault.transitCreateKey({ name });
        const pt = b64('attack at dawn');
        let r = await vault.encryptData({ name, plaintext: pt });
        const ct1 = r.data.ciphertext;
        assert.match(ct1, /^vault:v1:/);
        r = await vault.decryptData({ name, ciphertext: ct1 });
        assert.equal(r.data.plaintext, pt);

        await vault.write(`transit/keys/${name}/rotate`, {});
        r = await vault.rewrapData({ name, ciphertext: ct1 });
        const ct2 = r.data.ciphertext;
        assert.match(ct2, /^vault:v2:/);
        r = await vault.decryptData({ name, ciphertext: ct2 });
        assert.equal(r.data.plaintext, pt);

        // batches
        const items = ['one', 'two', 'three'].map((s) => ({ plaintext: b64(s), reference: s }));
        r = await vault.write(`transit/encrypt/${name}`, { batch_input: items });
        assert.equal(r.data.batch_results.length, 3);
        r.data.batch_results.forEach((res, i) => {
            assert.match(res.ciphertext, /^vault:v2:/);
            assert.equal(res.reference, items[i].reference);
        });
        const cts = r.data.batch_results.map((res) => ({ ciphertext: res.ciphertext }));
        r = await vault.write(`transit/decrypt/${name}`, { batch_input: cts });
        assert.deepEqual(r.data.batch_results.map((res) => unb64(res.plaintext).toString()),
            ['one', 'two', 'three']);
        r = await vault.write(`transit/rewrap/${name}`,
            { batch_input: [{ ciphertext: ct1 }, { ciphertext: ct2 }] });
        assert.deepEqual(r.data.batch_results.map((res) => res.ciphertext.slice(0, 9)),
            ['vault:v2:', 'vault:v2:']);

        // a batch with a bad item: 400 with every item's result, as OpenBao
        const e = await vault.write(`transit/decrypt/${name}`,
            { batch_input: [{ ciphertext: ct2 }, { ciphertext: 'garbage' }] }).then(
            () => assert.fail('a batch with a bad item succeeded'), (err) => err);
        assert.equal(e.response.statusCode, 400);
        assert.equal(unb64(e.response.body.data.batch_results[0].plaintext).toString(),
            'attack at dawn');
        assert.equal(e.response.body.data.batch_results[1].error,
            'invalid ciphertext: no prefix');

        // data keys
        r = await vault.write(`transit/datakey/plaintext/${name}`, { bits: 256 });
        assert.equal(unb64(r.data.plaintext).length, 32);
        const back = await vault.decryptData({ name, ciphertext: r.data.ciphertext });
        assert.equal(back.data.plaintext, r.data.plaintext);
        r = await vault.write(`transit/datakey/wrapped/${name}`, { bits: 512 });
        assert.equal(r.data.plaintext, undefined);
        const wrappedKey = await vault.decryptData({ name, ciphertext: r.data.ciphertext });
        assert.equal(unb64(wrappedKey.data.plaintext).length, 64);
    });

    test('hmac and verify with an hmac key and an AES key', async () => {
        const hk = uniq('hmac');
        await vault.transitCreateKey({ name: hk, type: 'hmac', key_size: 32, exportable: true });
        const exported = await vault.read(`transit/export/hmac-key/${hk}/1`);
        const key = unb64(exported.data.keys['1']);
        assert.equal(key.length, 32);
        const input = b64('message to authenticate');
        let r = await vault.write(`transit/hmac/${hk}/sha2-256`, { input });
        const mac = r.data.hmac;
        const expected = crypto.createHmac('sha256', key).update('message to authenticate')
            .digest('base64');
        assert.equal(mac, `vault:v1:${expected}`);
        r = await vault.write(`transit/verify/${hk}/sha2-256`, { input, hmac: mac });
        assert.equal(r.data.valid, true);
        r = await vault.write(`transit/verify/${hk}/sha2-256`, { input: b64('other'), hmac: mac });
        assert.equal(r.data.valid, false);

        const ak = uniq('hmac-aes');
        await vault.transitCreateKey({ name: ak });
        r = await vault.write(`transit/hmac/${ak}`, {
            algorithm: 'sha2-512',
            batch_input: [{ input: b64('a'), reference: 'ra' }, { input: b64('b') }],
        });
        assert.equal(r.data.batch_results.length, 2);
        assert.equal(r.data.batch_results[0].reference, 'ra');
        const macs = r.data.batch_results.map((res) => res.hmac);
        assert.equal(payload(macs[0]).length, 64);
        // verify reads hash_algorithm (default sha2-256), not the deprecated algorithm
        r = await vault.write(`transit/verify/${ak}`, {
            hash_algorithm: 'sha2-512',
            batch_input: [{ input: b64('a'), hmac: macs[0] }, { input: b64('a'), hmac: macs[1] }],
        });
        assert.equal(r.data.batch_results[0].valid, true);
        assert.notEqual(r.data.batch_results[1].valid, true);
    });

    const signCases = [
        { type: 'ed25519', opts: {}, node: null },
        { type: 'ecdsa-p256', opts: {}, node: { dsaEncoding: 'der' } },
        { type: 'ecdsa-p256', opts: { marshaling_algorithm: 'jws' },
          node: { dsaEncoding: 'ieee-p1363' } },
        { type: 'rsa-2048', opts: { signature_algorithm: 'pss' },
          node: { padding: crypto.constants.RSA_PKCS1_PSS_PADDING,
                  saltLength: crypto.constants.RSA_PSS_SALTLEN_AUTO } },
        { type: 'rsa-2048', opts: { signature_algorithm: 'pkcs1v15' },
          node: { padding: crypto.constants.RSA_PKCS1_PADDING } },
    ];
    for (const c of signCases) {
        const label = `${c.type} ${JSON.stringify(c.opts)}`;
        test(`sign and verify: ${label}`, async () => {
            const name = uniq(`sign-${c.type}`);
            await vault.transitCreateKey({ name, type: c.type });
            const key = await vault.transitReadKey({ name });
            const pub = key.data.keys['1'].public_key;
            const message = Buffer.from(`signed by kmsd with ${label}`);
            let r = await vault.write(`transit/sign/${name}`, { input: message.toString('base64'),
                ...c.opts });
            const sig = r.data.signature;
            assert.match(sig, /^vault:v1:/);
            assert.equal(r.data.key_version, 1);
            const raw = c.opts.marshaling_algorithm === 'jws'
                ? Buffer.from(sig.split(':')[2], 'base64url') : payload(sig);
            // Node's crypto agrees with the public key kmsd reads back
            const ok = c.type === 'ed25519'
                ? crypto.verify(null, message, ed25519Public(pub), raw)
                : crypto.verify('sha256', message, { key: pub, ...c.node }, raw);
            assert.equal(ok, true, 'node:crypto rejects the signature');

            r = await vault.write(`transit/verify/${name}`, { input: message.toString('base64'),
                signature: sig, ...c.opts });
            assert.equal(r.data.valid, true);
            r = await vault.write(`transit/verify/${name}`, { input: b64('tampered'),
                signature: sig, ...c.opts });
            assert.equal(r.data.valid, false);

            // a batch with references; every result verifies, in order
            const inputs = ['x', 'y', 'z'].map((s) => ({ input: b64(s), reference: `ref-${s}` }));
            r = await vault.write(`transit/sign/${name}`, { batch_input: inputs, ...c.opts });
            assert.deepEqual(r.data.batch_results.map((res) => res.reference),
                ['ref-x', 'ref-y', 'ref-z']);
            const checks = r.data.batch_results.map((res, i) => ({
                input: inputs[i].input, signature: res.signature, reference: `v${i}` }));
            checks.push({ input: b64('x'), signature: r.data.batch_results[1].signature,
                reference: 'swapped' });
            r = await vault.write(`transit/verify/${name}`, { batch_input: checks, ...c.opts });
            assert.deepEqual(r.data.batch_results.map((res) => [res.reference, res.valid]),
                [['v0', true], ['v1', true], ['v2', true], ['swapped', false]]);
        });
    }

    test('RSA encrypt and decrypt (OAEP), from both sides', async () => {
        const name = uniq('rsa-enc');
        await vault.transitCreateKey({ name, type: 'rsa-2048' });
        const pt = b64('rsa secret');
        let r = await vault.encryptData({ name, plaintext: pt });
        assert.equal(payload(r.data.ciphertext).length, 256);
        r = await vault.decryptData({ name, ciphertext: r.data.ciphertext });
        assert.equal(r.data.plaintext, pt);

        const pub = (await vault.transitReadKey({ name })).data.keys['1'].public_key;
        const mine = crypto.publicEncrypt({ key: pub,
            padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
        Buffer.from('made by node'));
        r = await vault.decryptData({ name, ciphertext: `vault:v1:${mine.toString('base64')}` });
        assert.equal(unb64(r.data.plaintext).toString(), 'made by node');
    });

    test('export: keys only when exportable, usable by Node', async () => {
        const aes = uniq('exp-aes');
        await vault.transitCreateKey({ name: aes, exportable: true });
        const ct = (await vault.encryptData({ name: aes, plaintext: b64('exported') }))
            .data.ciphertext;
        let r = await vault.read(`transit/export/encryption-key/${aes}/1`);
        assert.equal(r.data.name, aes);
        assert.equal(r.data.type, 'aes256-gcm96');
        assert.equal(gcmOpen(unb64(r.data.keys['1']), ct).toString(), 'exported');

        const ed = uniq('exp-ed');
        await vault.transitCreateKey({ name: ed, type: 'ed25519', exportable: true });
        r = await vault.read(`transit/export/signing-key/${ed}`);
        const priv = unb64(r.data.keys['1']); // seed || public key
        assert.equal(priv.length, 64);
        const sk = crypto.createPrivateKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519',
            d: priv.subarray(0, 32).toString('base64url'),
            x: priv.subarray(32).toString('base64url') } });
        const message = Buffer.from('deterministic');
        const mine = crypto.sign(null, message, sk).toString('base64');
        r = await vault.write(`transit/sign/${ed}`, { input: message.toString('base64') });
        assert.equal(r.data.signature, `vault:v1:${mine}`);

        const ec = uniq('exp-ec');
        await vault.transitCreateKey({ name: ec, type: 'ecdsa-p256' });
        r = await vault.read(`transit/export/public-key/${ec}`);
        const read = (await vault.transitReadKey({ name: ec })).data.keys['1'].public_key;
        assert.equal(crypto.createPublicKey(r.data.keys['1']).export({ format: 'der',
            type: 'spki' }).toString('hex'),
        crypto.createPublicKey(read).export({ format: 'der', type: 'spki' }).toString('hex'));
        await rejects(vault.read(`transit/export/signing-key/${ec}`), 400,
            ['private key material is not exportable']);
    });

    test('backup and restore', async () => {
        const name = uniq('bk');
        await vault.transitCreateKey({ name, exportable: true, allow_plaintext_backup: true });
        await vault.write(`transit/keys/${name}/rotate`, {});
        const ct = (await vault.encryptData({ name, plaintext: b64('kept') })).data.ciphertext;
        const backup = (await vault.read(`transit/backup/${name}`)).data.backup;
        assert.equal(typeof backup, 'string');

        const copy = uniq('bk-copy');
        await vault.write(`transit/restore/${copy}`, { backup });
        let r = await vault.decryptData({ name: copy, ciphertext: ct });
        assert.equal(unb64(r.data.plaintext).toString(), 'kept');
        r = await vault.transitReadKey({ name: copy });
        assert.equal(r.data.latest_version, 2);
        assert.equal(r.data.allow_plaintext_backup, true);

        await rejects(vault.write(`transit/restore/${copy}`, { backup }), 500,
            [wrapped(`key "${copy}" already exists`)]);
        await vault.write(`transit/restore/${copy}`, { backup, force: true });

        // an ed25519 key keeps signing as itself
        const ed = uniq('bk-ed');
        await vault.transitCreateKey({ name: ed, type: 'ed25519', exportable: true,
            allow_plaintext_backup: true });
        const sig = (await vault.write(`transit/sign/${ed}`, { input: b64('m') })).data.signature;
        const edBackup = (await vault.read(`transit/backup/${ed}`)).data.backup;
        await vault.write(`transit/keys/${ed}/config`, { deletion_allowed: true });
        await vault.transitDeleteKey({ name: ed });
        await vault.write('transit/restore', { backup: edBackup });
        r = await vault.write(`transit/sign/${ed}`, { input: b64('m') });
        assert.equal(r.data.signature, sig);

        const plain = uniq('bk-plain');
        await vault.transitCreateKey({ name: plain, exportable: true });
        await rejects(vault.read(`transit/backup/${plain}`), 500,
            [wrapped('plaintext backup is disallowed on the policy')]);
        await rejects(vault.write('transit/restore', {}), 400, ["'backup' must be supplied"]);
    });

    test('wrapping_key and BYOK import of keys made by Node', async () => {
        const wk = (await vault.read('transit/wrapping_key')).data.public_key;
        const again = (await vault.read('transit/wrapping_key')).data.public_key;
        assert.equal(again, wk);
        const wpub = crypto.createPublicKey(wk);
        assert.equal(wpub.asymmetricKeyType, 'rsa');
        assert.equal(wpub.asymmetricKeyDetails.modulusLength, 4096);

        // an AES-256 key: kmsd's ciphertexts open with it in Node
        const material = crypto.randomBytes(32);
        const aes = uniq('imp-aes');
        await vault.write(`transit/keys/${aes}/import`,
            { ciphertext: wrapForImport(wk, material), type: 'aes256-gcm96' });
        let r = await vault.transitReadKey({ name: aes });
        assert.equal(r.data.imported_key, true);
        const ct = (await vault.encryptData({ name: aes, plaintext: b64('byok') })).data.ciphertext;
        assert.equal(gcmOpen(material, ct).toString(), 'byok');

        // an ed25519 key (PKCS#8): signatures go both ways
        const { privateKey, publicKey } = crypto.generateKeyPairSync('ed25519');
        const ed = uniq('imp-ed');
        await vault.write(`transit/keys/${ed}/import`, { type: 'ed25519',
            ciphertext: wrapForImport(wk, privateKey.export({ format: 'der', type: 'pkcs8' })) });
        const message = Buffer.from('imported');
        r = await vault.write(`transit/sign/${ed}`, { input: message.toString('base64') });
        assert.equal(r.data.signature,
            `vault:v1:${crypto.sign(null, message, privateKey).toString('base64')}`);
        assert.equal(crypto.verify(null, message, publicKey, payload(r.data.signature)), true);

        // an ECDSA P-256 key: Node's signature verifies in kmsd
        const ecPair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const ec = uniq('imp-ec');
        await vault.write(`transit/keys/${ec}/import`, { type: 'ecdsa-p256',
            ciphertext: wrapForImport(wk, ecPair.privateKey.export({ format: 'der',
                type: 'pkcs8' })) });
        const nodeSig = crypto.sign('sha256', message, ecPair.privateKey).toString('base64');
        r = await vault.write(`transit/verify/${ec}`, { input: message.toString('base64'),
            signature: `vault:v1:${nodeSig}` });
        assert.equal(r.data.valid, true);
    });

    test('random and hash', async () => {
        let r = await vault.write('transit/random/32', {});
        assert.equal(unb64(r.data.random_bytes).length, 32);
        r = await vault.write('transit/random', { bytes: 8, format: 'hex' });
        assert.match(r.data.random_bytes, /^[0-9a-f]{16}$/);
        await rejects(vault.write('transit/random/0', {}), 400, ["'bytes' cannot be less than 1"]);
        await rejects(vault.write('transit/random/8', { format: 'oct' }), 400,
            ['unsupported encoding format "oct"; must be "hex" or "base64"']);

        const input = Buffer.from('hash me');
        r = await vault.write('transit/hash/sha2-256', { input: input.toString('base64') });
        assert.equal(r.data.sum, crypto.createHash('sha256').update(input).digest('hex'));
        r = await vault.write('transit/hash', { input: input.toString('base64'),
            algorithm: 'sha2-512', format: 'base64' });
        assert.equal(r.data.sum, crypto.createHash('sha512').update(input).digest('base64'));
        r = await vault.write('transit/hash/sha3-256', { input: input.toString('base64') });
        assert.equal(r.data.sum, crypto.createHash('sha3-256').update(input).digest('hex'));
        await rejects(vault.write('transit/hash/md5', { input: input.toString('base64') }), 400,
            ['unsupported algorithm md5']);
    });

    test('derive-key: ECDH + HKDF agreed with node:crypto on every curve', async () => {
        for (const [type, curve] of [['ecdsa-p256', 'prime256v1'], ['ecdsa-p384', 'secp384r1'],
            ['ecdsa-p521', 'secp521r1']]) {
            const base = uniq('ecdh-base');
            await vault.transitCreateKey({ name: base, type });
            const mine = crypto.generateKeyPairSync('ec', { namedCurve: curve });
            const derived = uniq('ecdh');
            const r = await vault.write(`transit/derive-key/${derived}`, {
                base_key_name: base,
                peer_public_key: mine.publicKey.export({ type: 'spki', format: 'pem' }),
            });
            assert.ok(!r, 'derive-key answers 204, no body');
            const theirs = crypto.createPublicKey(
                (await vault.transitReadKey({ name: base })).data.keys['1'].public_key);
            const secret = crypto.diffieHellman({ privateKey: mine.privateKey, publicKey: theirs });
            const key = Buffer.from(crypto.hkdfSync('sha256', secret, Buffer.alloc(0),
                Buffer.alloc(0), 32));
            const pt = crypto.randomBytes(24);
            const ct = (await vault.encryptData({ name: derived, plaintext: pt.toString('base64') }))
                .data.ciphertext;
            assert.deepEqual(gcmOpen(key, ct), pt, type);
            const k = await vault.transitReadKey({ name: derived });
            assert.equal(k.data.type, 'aes256-gcm96');
            assert.equal(k.data.imported_key, true);
        }
        const base = uniq('ecdh-base');
        await vault.transitCreateKey({ name: base, type: 'ecdsa-p256' });
        const p384 = crypto.generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
        await rejects(vault.write(`transit/derive-key/${uniq('x')}`, { base_key_name: base,
            peer_public_key: p384.publicKey.export({ type: 'spki', format: 'pem' }) }), 500,
        ['1 error occurred:\n\t* base private key type ecdsa-p256 does not match peer public key curve\n\n']);
        await rejects(vault.write(`transit/derive-key/${uniq('x')}`, { base_key_name: base }), 400,
            ['peer public key not provided']);
    });

    test('keys/:name/csr and set-certificate with a CA made by openssl', async () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kmsd-node-ca-'));
        try {
            const f = (n) => path.join(dir, n);
            execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt',
                'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'),
                '-subj', '/CN=node test CA', '-days', '2'], { stdio: 'ignore' });
            const name = uniq('csr');
            await vault.transitCreateKey({ name, type: 'ecdsa-p256' });
            let r = await vault.write(`transit/keys/${name}/csr`, {});
            assert.equal(r.data.name, name);
            assert.match(r.data.csr, /^-----BEGIN CERTIFICATE REQUEST-----\n/);
            fs.writeFileSync(f('req.pem'), r.data.csr);
            // openssl checks the request's signature before it issues the certificate
            execFileSync('openssl', ['x509', '-req', '-in', f('req.pem'), '-CA', f('ca.pem'),
                '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('leaf.pem'), '-days', '1'],
            { stdio: 'ignore' });
            const leaf = fs.readFileSync(f('leaf.pem'), 'utf8');
            const ca = fs.readFileSync(f('ca.pem'), 'utf8');
            const pub = (await vault.transitReadKey({ name })).data.keys['1'].public_key;
            assert.ok(new crypto.X509Certificate(leaf).publicKey.equals(crypto.createPublicKey(pub)));
            r = await vault.write(`transit/keys/${name}/set-certificate`,
                { certificate_chain: leaf + ca });
            assert.equal(r.data.certificate_chain, leaf + ca);
            r = await vault.transitReadKey({ name });
            assert.equal(r.data.keys['1'].certificate_chain, `${leaf.trim()}\n${ca.trim()}`);
            r = await vault.read(`transit/export/certificate-chain/${name}/1`);
            assert.equal(r.data.keys['1'], `${leaf.trim()}\n${ca.trim()}`);
            await rejects(vault.write(`transit/keys/${name}/set-certificate`,
                { certificate_chain: ca }), 400, ['failed to persist certificate chain: ' +
                'certificate in the first element is not a valid leaf certificate']);
        } finally {
            fs.rmSync(dir, { recursive: true, force: true });
        }
    });

    test('errors reach node-vault as {"errors":[...]} with the status', async () => {
        const name = uniq('err');
        await vault.transitCreateKey({ name });
        await rejects(vault.decryptData({ name, ciphertext: 'not-a-ciphertext' }), 400,
            ['invalid ciphertext: no prefix']);
        await rejects(vault.write(`transit/sign/${name}`, { input: b64('m') }), 400,
            ['key type aes256-gcm96 does not support signing']);
        await rejects(vault.transitReadKey({ name: uniq('absent') }), 404, []);
        const stranger = nodeVault({ endpoint: server.addr, token: 'not-a-token' });
        await rejects(stranger.transitReadKey({ name }), 403, ['permission denied']);
        await rejects(vault.transitCreateKey({ name: uniq('bad'), type: 'rot13' }), 400,
            ['unknown key type rot13']);
    });
});

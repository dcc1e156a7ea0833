'use strict';
// kmsd.js - starts the real kmsd for the node-vault tests, the way the Python harness
// (tests/integration/kmsd_harness.py) does: dev mode on 127.0.0.1:0, the bound address read
// back from the "kmsd listening" JSON log line, /v1/sys/health polled until it answers, and
// SIGTERM at the end with a clean exit required. KMSD_BIN names the binary (ctest sets it);
// the default is ../../build/kmsd from this folder.

const { spawn } = require('node:child_process');
const http = require('node:http');
const path = require('node:path');
const fs = require('node:fs');

const KMSD_BIN = process.env.KMSD_BIN || path.resolve(__dirname, '..', '..', 'build', 'kmsd');
const ROOT_TOKEN = 'kmsd-node-root-token';
const START_TIMEOUT_MS = 30000; // a deadline, not a wait (a loaded machine under ASan)
const STOP_TIMEOUT_MS = 10000;

function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

// GET /v1/sys/health once; resolves with the status code, rejects on a socket error.
function health(port) {
    return new Promise((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port, path: '/v1/sys/health', timeout: 2000 },
            (res) => {
                res.resume();
                res.on('end', () => resolve(res.statusCode));
            });
        req.on('timeout', () => req.destroy(new Error('timeout')));
        req.on('error', reject);
    });
}

// The "address" of the first complete "kmsd listening" line of the log, or null.
function listeningAddress(text) {
    for (const line of text.split('\n')) {
        const l = line.trim();
        if (!l.startsWith('{') || !l.includes('kmsd listening')) continue;
        try {
            const rec = JSON.parse(l);
            if (rec.msg === 'kmsd listening' && rec.address) return rec.address;
        } catch (e) {
            // a line still being written
        }
    }
    return null;
}

class Kmsd {
    constructor() {
        this.proc = null;
        this.log = '';
        this.port = null;
        this.exit = null;
        this.token = ROOT_TOKEN;
    }

    get addr() {
        if (this.port === null) throw new Error('kmsd has no address yet');
        return `http://127.0.0.1:${this.port}`;
    }

    logTail(lines = 60) {
        const all = this.log.split('\n');
        return `---- kmsd log (last ${lines} lines) ----\n${all.slice(-lines).join('\n')}\n` +
            '---- end of log ----';
    }

    async start() {
        try {
            fs.accessSync(KMSD_BIN, fs.constants.X_OK);
        } catch (e) {
            // a missing server is a failure, never a skip
            throw new Error(`kmsd binary not found or not executable: ${KMSD_BIN} ` +
                '(build it, or set KMSD_BIN)');
        }
        this.proc = spawn(KMSD_BIN, ['server', '-dev', '-dev-listen-address=127.0.0.1:0',
            `-dev-root-token-id=${ROOT_TOKEN}`], { stdio: ['ignore', 'pipe', 'pipe'] });
        const append = (chunk) => { this.log += chunk.toString('utf8'); };
        this.proc.stdout.on('data', append);
        this.proc.stderr.on('data', append);
        this.exited = new Promise((resolve) => {
            this.proc.on('exit', (code, signal) => {
                this.exit = { code, signal };
                resolve(this.exit);
            });
        });
        const deadline = Date.now() + START_TIMEOUT_MS;
        let lastErr = null;
        while (Date.now() < deadline) {
            if (this.exit !== null) {
                throw new Error(`kmsd exited during start-up (${JSON.stringify(this.exit)})\n` +
                    this.logTail());
            }
            if (this.port === null) {
                const a = listeningAddress(this.log);
                if (a !== null) {
                    const m = /^127\.0\.0\.1:(\d+)$/.exec(a);
                    if (m === null || Number(m[1]) === 0) {
                        this.kill();
                        throw new Error(`kmsd reported listening on ${a}, not a loopback port`);
                    }
                    this.port = Number(m[1]);
                }
            }
            if (this.port !== null) {
                try {
                    if (await health(this.port)) return this;
                } catch (e) {
                    lastErr = e;
                }
            }
            await sleep(20);
        }
        this.kill();
        throw new Error(`kmsd did not answer /v1/sys/health within ${START_TIMEOUT_MS} ms ` +
            `(${lastErr})\n${this.logTail()}`);
    }

    kill() {
        if (this.proc !== null && this.exit === null) this.proc.kill('SIGKILL');
    }

    // SIGTERM, then wait; throws unless kmsd exits with status 0.
    async stop() {
        if (this.proc === null) return;
        if (this.exit === null) this.proc.kill('SIGTERM');
        const timer = new Promise((resolve) => {
            const t = setTimeout(() => resolve(null), STOP_TIMEOUT_MS);
            t.unref();
        });
        const ex = await Promise.race([this.exited, timer]);
        if (ex === null) {
            this.kill();
            throw new Error(`kmsd did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM`);
        }
        if (ex.code !== 0) {
            throw new Error(`kmsd did not exit cleanly on SIGTERM (${JSON.stringify(ex)})\n` +
                this.logTail());
        }
    }
}

module.exports = { Kmsd, ROOT_TOKEN };

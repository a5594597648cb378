// Independent C2PA reader/writer for genguard's interop tests, on @trustnxt/c2pa-ts (pure TypeScript, no
// c2pa-rs inside). Usage:
//   node c2pa_ts.mjs read FILE [ANCHOR_PEM]      -> JSON: manifest found, valid, status codes, actions, chain check
//   node c2pa_ts.mjs sign SRC OUT CHAIN KEY MODE  -> writes OUT; MODE: ai | edit-of-ai | broken-signature
import * as crypto from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as x509 from '@peculiar/x509';
import { JPEG, PNG } from '@trustnxt/c2pa-ts/asset';
import { CoseAlgorithmIdentifier } from '@trustnxt/c2pa-ts/cose';
import { SuperBox } from '@trustnxt/c2pa-ts/jumbf';
import { ActionAssertion, DataHashAssertion, IngredientAssertion, ManifestStore } from '@trustnxt/c2pa-ts/manifest';

const IPTC = 'http://cv.iptc.org/newscodes/digitalsourcetype/';

function pemBlocks(text) {
    return [...text.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map(m => new x509.X509Certificate(m[0]));
}

async function openAsset(file) {
    const buf = new Uint8Array(await fs.readFile(file));
    if (JPEG.canRead(buf)) return new JPEG(buf);
    if (PNG.canRead(buf)) return new PNG(buf);
    throw new Error(`${file}: neither JPEG nor PNG`);
}

async function chainTrusted(store, anchorFile) {
    // c2pa-ts 0.9.4 checks signatures and hashes but not the chain to a trust anchor: that is done here
    // with @peculiar/x509, independently of c2pa-rs
    const sig = store.getActiveManifest()?.signature?.signatureData;
    const certs = (sig?.certificate ? [sig.certificate] : []).concat(sig?.chainCertificates ?? []);
    if (!certs.length) return null;
    const anchors = pemBlocks(await fs.readFile(anchorFile, 'utf8'));
    const leaf = certs[0];
    for (const root of anchors) {
        const issuers = [...certs.slice(1), root];
        let cur = leaf;
        for (let i = 0; i < 4; i++) {
            const up = issuers.find(c => c.subject === cur.issuer);
            if (!up || !(await cur.verify({ publicKey: up.publicKey, signatureOnly: true }))) break;
            if (up.subject === root.subject && (await up.publicKey.export()) && up.equal(root)) return true;
            cur = up;
        }
    }
    return false;
}

async function read(file, anchorFile) {
    const asset = await openAsset(file);
    const jumbf = asset.getManifestJUMBF();
    if (!jumbf) return { manifest: false };
    const store = ManifestStore.read(SuperBox.fromBuffer(jumbf));
    const result = await store.validate(asset);
    const active = store.getActiveManifest();
    const actions = [];
    for (const a of active?.assertions?.assertions ?? []) {
        if (a instanceof ActionAssertion) for (const act of a.actions) actions.push({ action: act.action, digitalSourceType: act.digitalSourceType });
    }
    const out = {
        manifest: true, valid: result.isValid, manifests: store.manifests.length,
        failures: result.statusEntries.filter(e => !e.success).map(e => e.code),
        successes: result.statusEntries.filter(e => e.success).map(e => e.code),
        actions,
        labels: (active?.assertions?.assertions ?? []).map(a => a.label),
    };
    if (anchorFile) out.chainTrusted = await chainTrusted(store, anchorFile);
    return out;
}

async function sign(src, dst, chainFile, keyFile, mode) {
    const certs = pemBlocks(await fs.readFile(chainFile, 'utf8'));
    // c2pa-ts 0.9.4's LocalSigner emits DER-encoded ECDSA, which COSE (RFC 9053 §2.1) and c2pa-rs refuse
    // ("EC signature should be in P1363 r|s format"); the key holder here signs in the COSE form itself
    const key = crypto.createPrivateKey(await fs.readFile(keyFile, 'utf8'));
    const signer = {
        algorithm: CoseAlgorithmIdentifier.ES256, certificate: certs[0], chainCertificates: certs.slice(1),
        async sign(payload) {
            return new Uint8Array(crypto.sign('sha256', payload, { key, dsaEncoding: 'ieee-p1363' }));
        },
    };
    const asset = await openAsset(src);
    const format = asset instanceof JPEG ? 'image/jpeg' : 'image/png';
    const store = new ManifestStore();
    let parent;
    if (mode === 'edit-of-ai') {
        // the AI original's manifest, then an edit whose parentOf ingredient points at it
        parent = store.createManifest({ assetFormat: format, instanceID: 'xmp:iid:ai-original', defaultHashAlgorithm: 'SHA-256', signer });
        const act = new ActionAssertion();
        act.actions = [{ action: 'c2pa.created', digitalSourceType: IPTC + 'trainedAlgorithmicMedia' }];
        parent.addAssertion(act);
    }
    const manifest = store.createManifest({ assetFormat: format, instanceID: 'xmp:iid:' + mode, defaultHashAlgorithm: 'SHA-256', signer });
    const act = new ActionAssertion();
    if (mode === 'edit-of-ai') {
        const ing = IngredientAssertion.createV3('parentOf');
        ing.title = 'ai-original.jpg';
        ing.format = format;
        ing.activeManifest = manifest.createHashedReference('/c2pa/' + parent.label);
        ing.claimSignature = manifest.createHashedReference('/c2pa/' + parent.label + '/c2pa.signature');
        ing.validationResults = { activeManifest: { success: [], informational: [], failure: [] } };
        manifest.addAssertion(ing);
        act.actions = [
            { action: 'c2pa.opened', parameters: { ingredients: [manifest.createAssertionReference(ing)] } },
            { action: 'c2pa.color_adjustments' },
        ];
    } else {
        act.actions = [{ action: 'c2pa.created', digitalSourceType: IPTC + 'trainedAlgorithmicMedia' }];
    }
    manifest.addAssertion(act);
    const dataHash = DataHashAssertion.create('SHA-256');
    manifest.addAssertion(dataHash);
    await asset.ensureManifestSpace(store.measureSize());
    await dataHash.updateWithAsset(asset);
    if (parent) {
        await parent.sign(signer);
        // c2pa-ts hashes a component through its sourceBox, which a freshly built manifest lacks
        parent.sourceBox = parent.generateJUMBFBox();
        parent.signature.sourceBox = parent.sourceBox.contentBoxes.find(b => b.descriptionBox?.label === 'c2pa.signature');
    }
    await manifest.sign(signer);
    let bytes = store.getBytes();
    if (mode === 'broken-signature') {
        // flip one byte of the COSE signature value (the end of the signature box, before any padding)
        bytes = new Uint8Array(bytes);
        const sigBytes = manifest.signature.signatureData.signature;
        const idx = Buffer.from(bytes).lastIndexOf(Buffer.from(sigBytes.subarray(0, 16)));
        if (idx < 0) throw new Error('signature bytes not found');
        bytes[idx + 8] ^= 0xff;
    }
    await asset.writeManifestJUMBF(bytes);
    await fs.writeFile(dst, await asset.getDataRange());
    return { written: dst, mode };
}

const [cmd, ...args] = process.argv.slice(2);
try {
    const out = cmd === 'read' ? await read(args[0], args[1]) : cmd === 'sign' ? await sign(...args) : null;
    if (out === null) throw new Error(`unknown command ${cmd}`);
    process.stdout.write(JSON.stringify(out) + '\n');
} catch (e) {
    process.stderr.write(`c2pa_ts: ${e?.stack ?? e}\n`);
    process.exit(3);
}

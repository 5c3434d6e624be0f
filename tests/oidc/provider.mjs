// A real OpenID Connect provider for jitgate's sign-on tests: panva's
// certified oidc-provider, with its own login form (devInteractions) and a
// few accounts and clients the test names. Started by tests/support/oidc.rs:
//
//   node tests/oidc/provider.mjs <settings.json>
//
// settings: { port, issuer?, idTokenTtl?, clients: [client metadata…],
// accounts: { id: claims } }.
// It prints "listening <issuer>" once it serves, and logs to stderr.
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));
// Where people and jitgate reach it: its own port, or a forwarder's
// (a test's man in the middle) when the settings name one.
const issuer = settings.issuer || `http://127.0.0.1:${settings.port}`;

// Fresh signing keys for every run: one RSA (RS256, the default) and one
// P-256 (ES256, for a client that asks for it).
const jwk = (type, options, alg) => ({
  ...generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' }),
  alg,
  use: 'sig',
  kid: `${alg.toLowerCase()}-${Date.now().toString(36)}`,
});
const keys = [
  jwk('rsa', { modulusLength: 2048 }, 'RS256'),
  jwk('ec', { namedCurve: 'P-256' }, 'ES256'),
];

const provider = new Provider(issuer, {
  clients: settings.clients,
  jwks: { keys },
  findAccount: async (ctx, id) => {
    const claims = settings.accounts[id];
    if (!claims) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
    groups: ['groups'],
  },
  // Scope claims in the ID token itself, as most company providers do.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
  },
  pkce: { required: () => true, methods: ['S256'] },
  ttl: {
    IdToken: settings.idTokenTtl || 3600,
  },
});
provider.proxy = false;
// What went wrong, for the test's log (the answers say only "invalid_grant").
for (const event of ['grant.error', 'authorization.error', 'server_error']) {
  provider.on(event, (ctx, err) => console.error(`${event}: ${err.message} ${err.error_detail || ''}`));
}

provider.listen(settings.port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});

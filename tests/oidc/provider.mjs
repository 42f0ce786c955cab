// The OpenID provider of the test suite: the certified `oidc-provider` package, configured by
// the test through a JSON file (argv[2]) and changed at run time through /__admin/.
//
// Config: { issuer?: string (default: this server's own URL), jwks: {keys: [...]},
//           clients: [...], accounts: {sub: {claims: {...}, disabled?: bool}},
//           idTokenTtl?: seconds, adminToken: string }
// An account's "amr" (e.g. ["pwd", "otp"]) is what its sign-in reports as authentication
// methods, as an IdP does after a second factor.
// It listens on 127.0.0.1:0 and prints one JSON line {"port": N} on stdout once it serves.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts;

function adminRequest(req, res) {
  if (!req.url.startsWith('/__admin/')) return false;
  if (req.headers.authorization !== `Bearer ${config.adminToken}`) {
    res.writeHead(401).end();
    return true;
  }
  let body = '';
  req.on('data', (chunk) => { body += chunk; });
  req.on('end', () => {
    const sub = decodeURIComponent(req.url.slice('/__admin/accounts/'.length));
    if (req.method === 'PUT' && req.url.startsWith('/__admin/accounts/') && sub) {
      accounts[sub] = JSON.parse(body);
      res.writeHead(204).end();
    } else {
      res.writeHead(404).end();
    }
  });
  return true;
}

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = config.issuer || `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: config.clients,
    jwks: config.jwks,
    cookies: { keys: [config.adminToken] },
    claims: {
      openid: ['sub', 'amr'],  // the sign-in's methods go into the ID token
      email: ['email', 'email_verified'],
      profile: ['preferred_username', 'name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    features: {
      devInteractions: { enabled: true },
      userinfo: { enabled: true },
      revocation: { enabled: true },
    },
    pkce: { required: () => true },
    ttl: {
      IdToken: config.idTokenTtl || 3600,
      AccessToken: 3600,
      AuthorizationCode: 60,
      RefreshToken: 86400,
      Grant: 86400,
      Session: 86400,
      Interaction: 600,
    },
    // As IdPs do for a first-party application: a refresh token whenever the client may
    // use one, and no consent screen.
    async issueRefreshToken(ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    async loadExistingGrant(ctx) {
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope(ctx.oidc.params.scope || 'openid');
      await grant.save();
      return grant;
    },
    async findAccount(ctx, sub) {
      const account = accounts[sub];
      if (!account || account.disabled) return undefined;
      return { accountId: sub, claims: async () => ({ sub, ...account.claims }) };
    },
  });
  provider.on('server_error', (ctx, err) => { console.error('server_error', err); });
  const handle = provider.callback();
  // The login form's answer: the dev interactions' own, plus the account's amr.
  const loginSubmit = (req, res) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', async () => {
      const form = new URLSearchParams(body);
      if (form.get('prompt') !== 'login') {
        res.writeHead(501).end();
        return;
      }
      const accountId = form.get('login');
      const amr = accounts[accountId]?.amr;
      try {
        await provider.interactionFinished(req, res, {
          login: { accountId, ...(amr ? { amr } : {}) },
        }, { mergeWithLastSubmission: false });
      } catch (err) {
        res.writeHead(400).end(String(err));
      }
    });
  };
  server.on('request', (req, res) => {
    if (adminRequest(req, res)) return;
    if (req.method === 'POST' && /^\/interaction\/[^/]+$/.test(req.url)) {
      loginSubmit(req, res);
      return;
    }
    handle(req, res);
  });
  process.stdout.write(`${JSON.stringify({ port })}\n`);
});

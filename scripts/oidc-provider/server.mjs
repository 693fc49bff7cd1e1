// A strict, real OAuth 2.0 authorization server for Harbor's interop test: node-oidc-provider
// (OpenID certified), configured the way a careful provider would be — HTTP Basic client
// authentication only, PKCE S256 required, refresh tokens rotated on every use, RFC 7009
// revocation, RFC 9207 `iss` on every authorization response. Beside it, on the same port, a
// resource in Harbor's standard dialect and a few test-only controls.
//
// Environment: HARBOR_INTEROP_CLIENT_SECRET (required), HARBOR_INTEROP_REDIRECT_URI (required),
// PORT (default 0: any free port). Prints one line `listening <base-url>` when ready.
//
// The login and consent screens are replaced by a handler that logs in `alice` and grants what
// was asked (`/interaction/<uid>`), or declines (`/interaction/<uid>?deny=1`): the protocol
// around them — cookies, the resume redirect, the grant — is the provider's own.

import http from 'node:http';
import Provider from 'oidc-provider';

const secret = process.env.HARBOR_INTEROP_CLIENT_SECRET;
const redirectUri = process.env.HARBOR_INTEROP_REDIRECT_URI;
if (!secret || !redirectUri) {
  console.error('HARBOR_INTEROP_CLIENT_SECRET and HARBOR_INTEROP_REDIRECT_URI are required');
  process.exit(2);
}

const server = http.createServer();
await new Promise((resolve) => server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', resolve));
const base = `http://127.0.0.1:${server.address().port}`;

// Refresh tokens alive at the provider, by id, with their grant: what `/admin/live` counts.
const live = new Map();

const provider = new Provider(base, {
  clients: [{
    client_id: 'harbor',
    client_secret: secret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  clientAuthMethods: ['client_secret_basic'],
  scopes: ['openid', 'offline_access', 'documents.read'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
  },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: ['harbor-interop-cookie-key'] },
  ttl: { AccessToken: 3600, AuthorizationCode: 60, Interaction: 600, Session: 3600, Grant: 86400, RefreshToken: 86400 },
});
provider.proxy = false;

provider.on('refresh_token.saved', (token) => live.set(token.jti, token.grantId));
provider.on('refresh_token.consumed', (token) => live.delete(token.jti));
provider.on('refresh_token.destroyed', (token) => live.delete(token.jti));
provider.on('grant.revoked', (_ctx, grantId) => {
  for (const [jti, grant] of live) if (grant === grantId) live.delete(jti);
});

// The next resource read is refused and its access token destroyed, as when the provider
// revokes a token on its own: a client must refresh once and read again.
let refuseNext = false;

const json = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

async function interaction(req, res, url) {
  const details = await provider.interactionDetails(req, res);
  if (url.searchParams.get('deny')) {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'the user declined',
    }, { mergeWithLastSubmission: false });
  }
  if (details.prompt.name === 'login') {
    return provider.interactionFinished(req, res, { login: { accountId: 'alice' } }, { mergeWithLastSubmission: false });
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  if (details.prompt.details.missingOIDCScope) grant.addOIDCScope(details.prompt.details.missingOIDCScope.join(' '));
  if (details.prompt.details.missingOIDCClaims) grant.addOIDCClaims(details.prompt.details.missingOIDCClaims);
  return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
}

async function resource(req, res) {
  const header = req.headers.authorization ?? '';
  const token = header.startsWith('Bearer ') ? await provider.AccessToken.find(header.slice(7)) : undefined;
  if (!token || token.isExpired) {
    res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' });
    return res.end();
  }
  if (refuseNext) {
    refuseNext = false;
    await token.destroy();
    res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' });
    return res.end();
  }
  return json(res, 200, {
    documents: [
      { id: 'oidc-doc-1', title: `${token.accountId}'s first document` },
      { id: 'oidc-doc-2', title: `${token.accountId}'s second document` },
    ],
  });
}

const oidc = provider.callback();
server.on('request', async (req, res) => {
  const url = new URL(req.url, base);
  try {
    if (url.pathname.startsWith('/interaction/')) return await interaction(req, res, url);
    if (url.pathname === '/resource') return await resource(req, res);
    if (url.pathname === '/admin/refuse-next' && req.method === 'POST') {
      refuseNext = true;
      return json(res, 200, { refuse_next: true });
    }
    if (url.pathname === '/admin/live') return json(res, 200, { refresh_tokens: live.size });
    return oidc(req, res);
  } catch (error) {
    return json(res, 500, { error: 'server_error', error_description: String(error) });
  }
});

console.log(`listening ${base}`);

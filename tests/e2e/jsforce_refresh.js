// jsforce as users run it: OAuth2.refreshToken (which sends its form body chunked), through
// grantdoctor with the `httpProxy` option and NODE_EXTRA_CA_CERTS, or against a gateway
// `loginUrl` with neither.
//
// Usage: node jsforce_refresh.js LOGIN_URL CLIENT_ID TOKEN [HTTP_PROXY]
// Prints one JSON object describing what the client saw.
const jsforce = require("jsforce");

async function main() {
  const [loginUrl, clientId, token, httpProxy] = process.argv.slice(2);
  const oauth2 = new jsforce.OAuth2({
    loginUrl,
    clientId,
    redirectUri: "https://app.example.com/callback",
    ...(httpProxy ? { httpProxy } : {}),
  });
  try {
    const res = await oauth2.refreshToken(token);
    return { ok: true, has_access_token: typeof res.access_token === "string", instance_url: res.instance_url };
  } catch (e) {
    // jsforce exposes Salesforce's `error` as the name and `error_description` as the message.
    return { ok: false, error: e.name, error_description: e.message };
  }
}

main().then((r) => console.log(JSON.stringify(r)), (e) => {
  console.error(e);
  process.exit(1);
});

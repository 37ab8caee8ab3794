"""The peer benchmark's mitmproxy addon: what grantdoctor does at the token endpoint, done the
way a mitmproxy user would script it. It maps Salesforce host names to the benchmark's origin
(grantdoctor's --resolve), and on `POST /services/oauth2/token` parses the form and the JSON
response, classifies an `invalid_grant` from the request and error description, and adds the
cause as a header.

Configured by environment: GD_RESOLVE="host:port=addr:port,...".
"""
import json
import os

from mitmproxy import http

TOKEN_PATH = "/services/oauth2/token"

# error_description (and grant type) -> cause id, as in grantdoctor's catalogue.
CAUSES = {
    ("refresh_token", "expired access/refresh token"): "sf.refresh.revoked",
    ("refresh_token", "expired authorization code"): "sf.refresh.concurrent_refresh",
    ("authorization_code", "expired authorization code"): "sf.code.expired",
    ("authorization_code", "invalid authorization code"): "sf.code.reused",
    ("password", "authentication failure"): "sf.password.bad_credentials",
    ("urn:ietf:params:oauth:grant-type:jwt-bearer", "invalid assertion"): "sf.jwt.invalid_signature",
    ("urn:ietf:params:oauth:grant-type:jwt-bearer", "audience is invalid"): "sf.jwt.audience_invalid",
    ("urn:ietf:params:oauth:grant-type:jwt-bearer", "user hasn't approved this consumer"): "sf.jwt.not_preauthorized",
}


def _resolve_map():
    out = {}
    for rule in filter(None, os.environ.get("GD_RESOLVE", "").split(",")):
        name, addr = rule.split("=")
        host, port = name.rsplit(":", 1)
        ip, aport = addr.rsplit(":", 1)
        out[(host, int(port))] = (ip, int(aport))
    return out


class TokenDoctor:
    def __init__(self):
        self.resolve = _resolve_map()

    def server_connect(self, data):
        target = self.resolve.get(tuple(data.server.address))
        if target:
            data.server.address = target

    def response(self, flow: http.HTTPFlow):
        if flow.request.method != "POST" or flow.request.path.split("?")[0] != TOKEN_PATH:
            return
        if flow.response is None or flow.response.status_code < 400:
            return
        try:
            body = json.loads(flow.response.get_text() or "")
        except ValueError:
            return
        if not isinstance(body, dict) or body.get("error") != "invalid_grant":
            return
        grant = flow.request.urlencoded_form.get("grant_type", "")
        cause = CAUSES.get((grant, body.get("error_description", "")), "sf.unknown")
        flow.response.headers["grantdoctor-cause"] = cause


addons = [TokenDoctor()]

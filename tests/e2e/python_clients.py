"""Python clients as users run them, each through grantdoctor (HTTPS_PROXY and
REQUESTS_CA_BUNDLE come from the environment, as in a user's shell).

Usage: python_clients.py FLOW ARGS...   Prints one JSON object describing what the client saw.
"""
import json
import sys

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed

TOKEN_URL = "https://{host}/services/oauth2/token"


def requests_refresh(host, client_id, token):
    # requests asks for gzip by default; the body arrives decoded, the headers as sent.
    r = requests.post(
        TOKEN_URL.format(host=host),
        data={"grant_type": "refresh_token", "client_id": client_id, "refresh_token": token},
        timeout=30,
    )
    return {
        "status": r.status_code,
        "content_encoding": r.headers.get("content-encoding"),
        "cause": r.headers.get("grantdoctor-cause"),
        "body": r.json(),
    }


def outcome(login):
    try:
        sf = login()
    except SalesforceAuthenticationFailed as e:
        return {"ok": False, "code": e.code, "message": e.message}
    return {"ok": True, "instance": sf.sf_instance, "has_session": bool(sf.session_id)}


def sf_password(username, password, key, secret):
    # With consumer key and secret simple-salesforce uses the OAuth password grant; the
    # security token goes at the end of the password, as Salesforce expects there.
    return outcome(lambda: Salesforce(
        username=username, password=password, consumer_key=key, consumer_secret=secret,
        domain="login"))


def sf_jwt(username, key, private_key_file):
    return outcome(lambda: Salesforce(
        username=username, consumer_key=key, privatekey_file=private_key_file, domain="login"))


def sf_client_credentials(key, secret, domain):
    return outcome(lambda: Salesforce(consumer_key=key, consumer_secret=secret, domain=domain))


FLOWS = {
    "requests-refresh": requests_refresh,
    "sf-password": sf_password,
    "sf-jwt": sf_jwt,
    "sf-client-credentials": sf_client_credentials,
}

if __name__ == "__main__":
    print(json.dumps(FLOWS[sys.argv[1]](*sys.argv[2:])))

"""The docs page and the cookie in a real browser: headless Chromium through Selenium.

Debian's `chromium` and `chromium-driver` (Selenium is pointed at the system driver, so it
downloads nothing). Under CI a missing browser fails the run; elsewhere these tests skip,
saying what to install. Every test starts a real gunicorn server on 127.0.0.1.

What a learner should see proven here:
- the page loads with no console error (its Content-Security-Policy refuses nothing it
  needs) and lists every operation of the document;
- "Try it out" on the page itself: register, log in, the profile answers with the email,
  log out, the profile is refused;
- the cookie is HttpOnly: `document.cookie` on the page does not show it, yet the browser
  sends it; after logout the browser no longer holds it;
- SameSite=Lax: a page of another site (`localhost`, where the service is `127.0.0.1`)
  makes a request to the service that arrives without the cookie, while following a link
  from that page to the service still carries it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from servers import GunicornServer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = (
    "the browser tests need Debian's chromium and chromium-driver "
    "(apt-get install chromium chromium-driver) and selenium (requirements-test.txt)"
)
WAIT_SECONDS = 15
DOCUMENT = json.loads((Path(__file__).parent.parent / "openapi.json").read_text())
OPERATION_COUNT = sum(
    1
    for item in DOCUMENT["paths"].values()
    for method in item
    if method in {"get", "put", "post", "delete", "patch"}
)
SCREENSHOT = Path(__file__).parent.parent / "docs" / "docs-page.png"

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Chromium for the run (each test clears its cookies first)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing = "selenium"
    else:
        missing = next(
            (path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)), ""
        )
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests must run under CI: {missing} is missing")
        pytest.skip(INSTALL_HINT)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root (CI) Chromium refuses to start with its sandbox
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    yield driver
    driver.quit()


@pytest.fixture
def page(
    browser: object, start_server: Callable[..., GunicornServer]
) -> Iterator[object]:
    """The browser, with no cookie and no console line left from an earlier test, and a
    server of the test's own with gunicorn's access log (what arrived, with its status)."""
    forget_cookies(browser)
    browser.get_log("browser")  # reading empties it
    browser.server = start_server(extra_args=("--access-logfile", "-"))
    yield browser


def forget_cookies(driver: object) -> None:
    """Drop every cookie the browser holds, for every host. WebDriver's
    `delete_all_cookies` drops only the current page's host's: after a test that ended
    on `localhost`, `127.0.0.1`'s session cookie (cookies ignore the port) would follow
    into the next test."""
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})


def wait_for(
    condition: Callable[[], object],
    what: str,
    instead: Callable[[], str] | None = None,
) -> object:
    """Poll until `condition()` is truthy; fail naming `what` after WAIT_SECONDS (and,
    with `instead`, what was there at the end)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    seen = f"; instead: {instead()}" if instead is not None else ""
    pytest.fail(f"timed out waiting for {what}{seen}")


def console_errors(driver: object, *, answers_expected: bool = False) -> list[dict]:
    """The console's SEVERE lines since the last call (a CSP refusal is one).

    `answers_expected`: leave out the "network" lines Chromium writes for every 4xx
    answer of a fetch (a 403 the test asked for is no error of the page).
    """
    return [
        line
        for line in driver.get_log("browser")
        if line["level"] == "SEVERE"
        and not (answers_expected and line["source"] == "network")
    ]


def open_docs(driver: object) -> list[object]:
    """Load /docs; the operation blocks once Swagger UI has rendered them all."""
    from selenium.webdriver.common.by import By

    driver.get(f"{driver.server.url}/docs")
    return wait_for(
        lambda: (
            blocks
            if len(blocks := driver.find_elements(By.CSS_SELECTOR, ".opblock"))
            == OPERATION_COUNT
            else None
        ),
        f"{OPERATION_COUNT} operations on the page",
    )


def try_it_out(
    driver: object, block_id: str, fields: dict[str, str] | None = None
) -> tuple[int, str]:
    """Use the page's "Try it out" on one operation: open it, fill the form, Execute.

    Returns the status and the response body the page shows.
    """
    from selenium.webdriver.common.by import By

    block = driver.find_element(By.ID, block_id)
    if "is-open" not in block.get_attribute("class"):
        block.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    start = block.find_elements(By.CSS_SELECTOR, ".try-out__btn:not(.cancel)")
    if start:
        start[0].click()
    for name, value in (fields or {}).items():
        field = block.find_element(By.CSS_SELECTOR, f'input[placeholder="{name}"]')
        field.clear()
        field.send_keys(value)
    for clear in block.find_elements(By.CSS_SELECTOR, ".btn-clear"):
        clear.click()  # so the wait below sees this request's answer, not the last one
    block.find_element(By.CSS_SELECTOR, ".execute").click()
    status = wait_for(
        lambda: block.find_elements(
            By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"
        ),
        f"the answer of {block_id}",
    )[0].text
    bodies = block.find_elements(
        By.CSS_SELECTOR,
        ".live-responses-table tr.response .response-col_description pre",
    )
    return int(status.split()[0]), bodies[0].text if bodies else ""


def access_log_status(server: GunicornServer, request_line: str) -> int:
    """The status gunicorn's access log gives for the request with this request line."""
    line = wait_for(
        lambda: next(
            (
                line
                for line in server.log().splitlines()
                if f'"{request_line} HTTP/1.1"' in line
            ),
            None,
        ),
        f"{request_line} in the access log",
    )
    return int(re.search(r'HTTP/1\.1" (\d{3}) ', line).group(1))


def test_the_docs_page_lists_every_operation_with_no_console_error(
    page: object,
) -> None:
    blocks = open_docs(page)
    assert len(blocks) == OPERATION_COUNT
    shown = {
        block.get_attribute("id").rsplit("-", 1)[1] for block in blocks
    }  # "operations-<tag>-<operationId>"
    documented = {
        operation["operationId"]
        for item in DOCUMENT["paths"].values()
        for operation in item.values()
    }
    assert shown == documented
    assert console_errors(page) == []


def test_try_it_out_registers_logs_in_shows_the_profile_and_logs_out(
    page: object,
) -> None:
    open_docs(page)
    account = {"email": "learner@example.com", "password": "s3cret pw"}
    status, body = try_it_out(page, "operations-account-register", account)
    assert status == 200, body
    status, body = try_it_out(page, "operations-sessions-login", account)
    assert status == 200, body
    assert json.loads(body) == {"email": account["email"], "message": "logged in"}

    # HttpOnly: the page's scripts cannot see the cookie...
    assert "session_id" not in page.execute_script("return document.cookie")
    cookie = page.get_cookie("session_id")  # (WebDriver sees every cookie)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"
    # ...yet the browser sends it: the profile answers with the email.
    status, body = try_it_out(page, "operations-sessions-profile")
    assert (status, json.loads(body)) == (200, {"email": account["email"]})
    if os.environ.get("AUTHSVC_TEST_SCREENSHOT"):  # the README's picture, taken here
        from selenium.webdriver.common.by import By

        block = page.find_element(By.ID, "operations-sessions-profile")
        page.execute_script("arguments[0].scrollIntoView()", block)
        assert block.screenshot(str(SCREENSHOT)), SCREENSHOT

    status, _ = try_it_out(page, "operations-sessions-logout")
    # fetch() follows the 302 itself, with the same method, and the page shows that
    # answer: DELETE / is a 405 (the document says so). The logout itself ran, and its
    # Set-Cookie cleared the cookie.
    assert status == 405
    assert access_log_status(page.server, "DELETE /sessions") == 302
    assert page.get_cookie("session_id") is None
    status, body = try_it_out(page, "operations-sessions-profile")
    assert (status, json.loads(body)) == (403, {"message": "no valid session"})
    assert console_errors(page, answers_expected=True) == []


class _OtherSite(BaseHTTPRequestHandler):
    """Serves one page, as another site would: `page_html` for every GET."""

    page_html = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.page_html)))
        self.end_headers()
        self.wfile.write(self.page_html)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the service's log, not this one's."""


@pytest.fixture
def other_site() -> Iterator[Callable[[str], str]]:
    """Serve a page on http://localhost:<port>/: another site than http://127.0.0.1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtherSite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(html: str) -> str:
        _OtherSite.page_html = html.encode()
        return f"http://localhost:{server.server_address[1]}/"

    yield serve
    server.shutdown()
    server.server_close()


def test_samesite_lax_keeps_the_cookie_off_other_sites_requests(
    page: object, other_site: Callable[[str], str]
) -> None:
    """Logged in on 127.0.0.1, the user visits a page on localhost (another site). Its
    script's request to the service arrives without the cookie (403 in the service's
    log); a link the user follows from it is a top-level navigation and carries it."""
    from selenium.webdriver.common.by import By

    open_docs(page)
    account = {"email": "visitor@example.com", "password": "s3cret pw"}
    assert try_it_out(page, "operations-account-register", account)[0] == 200
    assert try_it_out(page, "operations-sessions-login", account)[0] == 200

    service = page.server.url
    page.get(
        other_site(
            f"""<!doctype html><title>elsewhere</title>
            <a id="link" href="{service}/profile?from=link">your profile</a>
            <script>
              fetch("{service}/profile?from=script", {{mode: "no-cors", credentials: "include"}})
                .then(() => {{ document.title = "sent"; }});
            </script>"""
        )
    )
    wait_for(lambda: page.title == "sent", "the other site's request")
    assert access_log_status(page.server, "GET /profile?from=script") == 403
    page.find_element(By.ID, "link").click()
    wait_for(lambda: "/profile?from=link" in page.current_url, "the link's page")
    assert json.loads(page.find_element(By.TAG_NAME, "body").text) == {
        "email": account["email"]
    }
    assert access_log_status(page.server, "GET /profile?from=link") == 200


def test_a_page_of_another_site_cannot_log_the_visitor_out_or_in(
    page: object, other_site: Callable[[str], str]
) -> None:
    """Logged in on 127.0.0.1, the visitor opens a page on localhost that tries both:
    a script's DELETE /sessions (the browser asks first with a preflight, which the
    service does not grant, so the DELETE is never sent) and a form that posts the
    attacker's email and password to POST /sessions ("login CSRF": the visitor would
    go on as the attacker). The service refuses the form's request by its Origin; the
    visitor is still logged in as themselves."""
    import requests
    from selenium.webdriver.common.by import By

    service = page.server.url
    attacker = {"email": "attacker@example.com", "password": "attacker pw"}
    assert requests.post(f"{service}/users", data=attacker, timeout=15).ok
    open_docs(page)
    visitor = {"email": "visitor@example.com", "password": "s3cret pw"}
    assert try_it_out(page, "operations-account-register", visitor)[0] == 200
    assert try_it_out(page, "operations-sessions-login", visitor)[0] == 200
    own_cookie = page.get_cookie("session_id")["value"]

    page.get(
        other_site(
            f"""<!doctype html><title>elsewhere</title>
            <form id="login" method="POST" action="{service}/sessions">
              <input name="email" value="{attacker["email"]}">
              <input name="password" value="{attacker["password"]}">
            </form>
            <script>
              fetch("{service}/sessions", {{method: "DELETE", credentials: "include"}})
                .then(() => {{ document.title = "sent"; }},
                      () => {{ document.title = "blocked"; }});
            </script>"""
        )
    )
    wait_for(lambda: page.title in ("sent", "blocked"), "the other site's DELETE")
    assert page.title == "blocked"
    assert access_log_status(page.server, "OPTIONS /sessions") == 405
    assert '"DELETE /sessions HTTP/1.1"' not in page.server.log()

    page.find_element(By.ID, "login").submit()
    assert access_log_status(page.server, "POST /sessions") in (200, 403)
    posts = [
        line
        for line in page.server.log().splitlines()
        if '"POST /sessions HTTP/1.1"' in line
    ]
    # The visitor's own login (Try it out) was a 200; the other site's form, a 403.
    assert [
        int(re.search(r'HTTP/1\.1" (\d{3}) ', line).group(1)) for line in posts
    ] == [200, 403]
    wait_for(lambda: "cross-site request refused" in page.page_source, "the refusal")
    assert page.get_cookie("session_id")["value"] == own_cookie
    page.get(f"{service}/profile")
    assert json.loads(page.find_element(By.TAG_NAME, "body").text) == {
        "email": visitor["email"]
    }


# -- the pages (/ui/), as a person uses them

UI_SCREENSHOTS = Path(__file__).parent.parent / "docs"


def submit(driver: object, fields: dict[str, str], button_of: str) -> None:
    """Fill fields by id, then press the submit button of the form holding
    `button_of` (a field id), as a person would (JavaScript plays no part)."""
    from selenium.webdriver.common.by import By

    for field_id, value in fields.items():
        element = driver.find_element(By.ID, field_id)
        element.clear()
        element.send_keys(value)
    form = driver.find_element(By.ID, button_of).find_element(
        By.XPATH, "./ancestor::form"
    )
    press(driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def press(driver: object, button: object) -> None:
    """Click `button` and wait for the page it leads to (the old one goes stale)."""
    from selenium.webdriver.common.by import By

    old = driver.find_element(By.TAG_NAME, "html")
    button.click()
    wait_for_next_page(old)


def wait_for_next_page(old: object) -> None:
    """Wait until the page whose `<html>` element is `old` has been replaced."""
    from selenium.common.exceptions import WebDriverException

    def gone() -> bool:
        # Stale, or (in the instant the new page replaces it) "Node with given id
        # does not belong to the document": either way the old page is gone.
        try:
            old.is_enabled()
        except WebDriverException:
            return True
        return False

    wait_for(gone, "the next page")


def click_button(driver: object, action: str) -> None:
    """Press the button of the form posting to `action`."""
    from selenium.webdriver.common.by import By

    press(
        driver,
        driver.find_element(
            By.CSS_SELECTOR, f'form[action="{action}"] button[type=submit]'
        ),
    )


def on_page(driver: object, path: str) -> None:
    """Wait until the browser shows `path`, with no console error (a CSP refusal is
    one) on the way."""
    wait_for(
        lambda: driver.current_url.split("#")[0].split("?")[0].endswith(path),
        f"the page {path}",
        lambda: f"{driver.current_url} titled {driver.title!r}",
    )
    assert console_errors(driver) == [], path


def shoot(
    driver: object, name: str, tmp_path: Path, element: object | None = None
) -> None:
    """A screenshot of the page (or of one `element` of it): always taken (it must
    work), kept under docs/ for the README when AUTHSVC_TEST_SCREENSHOT is set."""
    folder = UI_SCREENSHOTS if os.environ.get("AUTHSVC_TEST_SCREENSHOT") else tmp_path
    if element is None:
        assert driver.save_screenshot(str(folder / name)), name
    else:
        driver.execute_script("arguments[0].scrollIntoView()", element)
        assert element.screenshot(str(folder / name)), name


def test_a_person_uses_the_pages_from_sign_up_to_deletion(
    page: object, tmp_path: Path
) -> None:
    """Sign up, verify the email, change the password, set up two-factor (the secret
    read from the page, the code computed), log out, log in with a code, end another
    session, delete the account: all with plain forms, no console error anywhere."""
    import requests
    from selenium.webdriver.common.by import By

    from factors import code_at, time_step

    url = page.server.url
    email, password, new = "person@example.com", "s3cret pw", "n3w s3cret pw"
    page.set_window_size(420, 1600)  # a phone's width
    page.get(f"{url}/ui/signup")
    on_page(page, "/ui/signup")
    submit(page, {"email": email, "password": password}, "password")
    on_page(page, "/ui/account")
    assert page.find_element(By.ID, "account-email").text == email
    # HttpOnly: the page's scripts never see the session cookie, the browser sends it.
    assert "session_id" not in page.execute_script("return document.cookie")
    panel_text = page.find_element(By.CLASS_NAME, "panel").text
    assert "Set-Cookie: session_id=…; HttpOnly; Path=/; SameSite=Lax" in panel_text
    shoot(page, "ui-panel.png", tmp_path, page.find_element(By.CLASS_NAME, "panel"))

    click_button(page, "/ui/account/verification")
    on_page(page, "/ui/account/verification")
    code = page.find_element(By.ID, "verification-code").text
    submit(page, {"verify-code": code}, "verify-code")
    on_page(page, "/ui/account")
    assert page.find_element(By.ID, "account-verified").text == "yes"

    submit(page, {"password-current": password, "password-new": new}, "password-new")
    on_page(page, "/ui/account")

    submit(page, {"two-factor-password": new}, "two-factor-password")
    on_page(page, "/ui/account/two_factor")
    secret = page.find_element(By.ID, "totp-secret").text
    assert page.find_element(By.ID, "qr-code").get_attribute("naturalWidth") != "0"
    page.execute_script(
        "arguments[0].scrollIntoView()", page.find_element(By.ID, "two-factor")
    )
    shoot(page, "ui-two-factor.png", tmp_path)
    step = time_step(time.time())
    submit(page, {"confirm-code": code_at(secret, step)}, "confirm-code")
    on_page(page, "/ui/account/two_factor_confirm")
    recovery = [
        li.text for li in page.find_elements(By.CSS_SELECTOR, "#recovery-codes li")
    ]
    assert len(recovery) == 10

    click_button(page, "/ui/logout")
    on_page(page, "/ui/login")
    submit(page, {"email": email, "password": new}, "password")
    on_page(page, "/ui/login/code")
    shoot(page, "ui-login-code.png", tmp_path)
    submit(page, {"code": code_at(secret, step + 1)}, "code")  # the step after set-up's
    on_page(page, "/ui/account")
    assert (
        "on, 10 recovery codes left"
        in page.find_element(By.ID, "account-two-factor").text
    )

    # Another device (a script), with a recovery code; the person ends its session.
    other = requests.post(
        f"{url}/sessions",
        data={"email": email, "password": new, "code": recovery[0]},
        timeout=15,
    )
    assert other.status_code == 200
    page.get(f"{url}/ui/account")
    on_page(page, "/ui/account")
    rows = page.find_elements(By.CSS_SELECTOR, ".sessions li")
    assert len(rows) == 2
    stranger = next(row for row in rows if not row.find_elements(By.TAG_NAME, "strong"))
    press(page, stranger.find_element(By.CSS_SELECTOR, "button"))
    on_page(page, "/ui/account")
    assert len(page.find_elements(By.CSS_SELECTOR, ".sessions li")) == 1
    assert (
        requests.get(f"{url}/profile", cookies=other.cookies, timeout=15).status_code
        == 403
    )

    submit(
        page, {"delete-password": new, "code-delete": recovery[1]}, "delete-password"
    )
    on_page(page, "/ui/signup")
    assert page.get_cookie("session_id") is None
    gone = requests.post(
        f"{url}/sessions", data={"email": email, "password": new}, timeout=15
    )
    assert gone.status_code == 401


def test_the_login_page_works_with_the_keyboard_alone(page: object) -> None:
    """Tab to each field, type, Enter: no mouse, no script (labels and native forms)."""
    import requests
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url = page.server.url
    account = {"email": "keys@example.com", "password": "s3cret pw"}
    assert requests.post(f"{url}/users", data=account, timeout=15).ok
    page.get(f"{url}/ui/login")
    on_page(page, "/ui/login")
    keys = ActionChains(page)
    # The header's links come first: tab until the email field has the focus.
    for _ in range(10):
        if page.switch_to.active_element.get_attribute("id") == "email":
            break
        keys.send_keys(Keys.TAB).perform()
    assert page.switch_to.active_element.get_attribute("id") == "email"
    keys.send_keys(account["email"], Keys.TAB, account["password"]).perform()
    old = page.find_element(By.TAG_NAME, "html")
    keys.send_keys(Keys.ENTER).perform()
    wait_for_next_page(old)
    on_page(page, "/ui/account")
    assert page.find_element(By.ID, "account-email").text == account["email"]


def test_a_person_adds_a_passkey_and_logs_in_with_it_alone(
    page: object, tmp_path: Path
) -> None:
    """Chromium's virtual authenticator (CTAP2, a resident key, user verification) as
    the person's device: sign up on the pages, add a passkey, log out, log in with the
    passkey and no password, see that session on /ui/account, remove the passkey, and
    the next passkey login fails. WebAuthn needs a secure context and an RP id the
    page's host belongs to: the pages are opened at localhost (course mode's RP id)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.virtual_authenticator import (
        Protocol,
        Transport,
        VirtualAuthenticatorOptions,
    )

    url = page.server.url.replace("127.0.0.1", "localhost")
    email, password = "passkey@example.com", "s3cret pw"
    page.add_virtual_authenticator(
        VirtualAuthenticatorOptions(
            protocol=Protocol.CTAP2,
            transport=Transport.INTERNAL,
            has_resident_key=True,
            has_user_verification=True,
            is_user_verified=True,
            is_user_consenting=True,
        )
    )
    try:
        page.get(f"{url}/ui/signup")
        on_page(page, "/ui/signup")
        submit(page, {"email": email, "password": password}, "password")
        on_page(page, "/ui/account")
        assert page.find_element(By.ID, "account-passkeys").text == "0"

        # The form's script runs the ceremony: options, the authenticator, the answer.
        submit(
            page,
            {"passkey-name": "test laptop", "passkey-password": password},
            "passkey-password",
        )
        on_page(page, "/ui/account")
        names = [e.text for e in page.find_elements(By.CSS_SELECTOR, ".passkey-name")]
        assert names == ["test laptop"]
        assert page.find_element(By.ID, "account-passkeys").text == "1"
        (held,) = page.get_credentials()
        assert held.is_resident_credential and held.rp_id == "localhost"
        section = 'section[aria-labelledby="passkeys"]'
        shoot(
            page,
            "ui-passkeys.png",
            tmp_path,
            page.find_element(By.CSS_SELECTOR, section),
        )

        click_button(page, "/ui/logout")
        on_page(page, "/ui/login")
        assert page.get_cookie("session_id") is None
        button = page.find_element(By.ID, "passkey-login")
        assert button.is_displayed()  # the script found WebAuthn and showed it
        press(page, button)  # no email, no password
        on_page(page, "/ui/account")
        assert page.find_element(By.ID, "account-email").text == email
        assert "session_id" not in page.execute_script("return document.cookie")
        rows = page.find_elements(By.CSS_SELECTOR, ".sessions li")
        assert len(rows) == 1 and "this one" in rows[0].text  # the passkey's session
        assert "last used" in page.find_element(By.ID, "passkey-list").text

        (remove_password,) = page.find_elements(
            By.CSS_SELECTOR, "#passkey-list input[type=password]"
        )
        submit(
            page,
            {remove_password.get_attribute("id"): password},
            remove_password.get_attribute("id"),
        )
        on_page(page, "/ui/account")
        assert "No passkey yet." in page.find_element(By.ID, "passkey-list").text
        assert page.find_element(By.ID, "account-passkeys").text == "0"

        click_button(page, "/ui/logout")
        on_page(page, "/ui/login")
        # The device still holds the key; the service no longer takes it.
        assert len(page.get_credentials()) == 1
        page.find_element(By.ID, "passkey-login").click()
        error = wait_for(
            lambda: (
                (e := page.find_element(By.ID, "passkey-error")).is_displayed() and e
            ),
            "the passkey login's refusal",
        )
        assert error.text == "the passkey was not accepted"
        assert page.current_url.split("?")[0].endswith("/ui/login")
        assert page.get_cookie("session_id") is None
        lines = console_errors(page, answers_expected=True)
        assert lines == [], lines
    finally:
        forget_cookies(page)  # localhost's too, not to follow other tests
        page.remove_virtual_authenticator()

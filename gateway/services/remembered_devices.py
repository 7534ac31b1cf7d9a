"""Remembered browsers of two-step sign-in (``RINGFENCE_MFA_REMEMBER_DAYS``; off, 0, by
default).

After a right second step in the console (a code, a recovery code or a passkey) a person
may tick "Remember this browser for N days": the browser gets a random token in an
HttpOnly cookie (``console/session.py``) and only the token's SHA-256 is kept here, with
the person, their session version, a label from the User-Agent and an end time. At that
person's next password step from that browser the second step is skipped
(:meth:`RememberedDeviceService.skip_second_step`, audited ``auth.mfa_remembered``). The
password is always checked first: the skip takes the ticket that only a right password
gets. A cookie of another person does nothing, and a passwordless passkey sign-in needs
nothing of this. The admin API's ``POST /auth/login`` takes no part: it always asks for
the second step.

A remembered browser counts only while it is *live* (:func:`live`, one SQL condition
serving the skip, the person's list and the upkeep):

- before its end, and within ``RINGFENCE_MFA_REMEMBER_DAYS`` of when it was remembered
  (0: none is; lowering the setting shortens those remembered before);
- its person is active and their session version is the one it was made under: a
  password change or reset, an admin's reset of their factors and deactivation (every
  change that ends all of a person's sessions) end it for good;
- one of the factors the person had when they ticked the box is left: removing their
  last factor ends it (and so does replacing every one of them). Removing the person
  removes it (the foreign key cascades).

Forgetting one browser or all of them is the person's own, audited
(``mfa.device_forgotten``, ``mfa.devices_forgotten``). Signing out forgets nothing: that is
the point. The scheduled upkeep deletes the rows that are no longer live
(:meth:`RememberedDeviceService.forget_ended`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, exists, false, not_, or_, select, update
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import (
    MfaFactor,
    PasskeyCredential,
    RememberedDevice,
    TokenPurpose,
    User,
    UserStatus,
    UserToken,
    utcnow,
)
from gateway.errors import NotFound, TooManyRequests, Unauthorized
from gateway.identity.security import new_token, token_digest
from gateway.services.auth import AuthService, IssuedToken, claim_user_token
from gateway.services.base import Actor, AuditTarget, UnitOfWork, self_actor
from gateway.services.mfa import MfaService

MAX_LABEL = 100
MAX_TOKEN = 200  # a cookie longer than any token we make is nobody's
# How soon after the second step used its ticket the browser may be remembered: the same
# request does both (the console remembers it right after the code or the passkey).
REMEMBER_WITHIN = timedelta(minutes=1)

# Known names only, in an order where the first match is right (Edge's User-Agent names
# Chrome and Safari too, Chrome's names Safari, an iPhone's "like Mac OS X"): the label
# never repeats what a client sent.
_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
)
_SYSTEMS = (
    ("Windows", "Windows"),
    ("Android", "Android"),
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("CrOS", "ChromeOS"),
    ("Mac OS X", "macOS"),
    ("Macintosh", "macOS"),
    ("Linux", "Linux"),
)


def device_label(user_agent: str) -> str:
    """What a person recognises a browser by, e.g. "Firefox on Linux": known names read
    from its User-Agent, never the header itself."""
    browser = next((name for mark, name in _BROWSERS if mark in user_agent), None)
    system = next((name for mark, name in _SYSTEMS if mark in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or (f"A browser on {system}" if system else "A browser")


def live(now: datetime, days: int) -> ColumnElement[bool]:
    """The rows of :class:`RememberedDevice` that still skip the second step at ``now``
    with ``RINGFENCE_MFA_REMEMBER_DAYS`` = ``days`` (the module's rules)."""
    if days <= 0:
        return false()
    device = RememberedDevice
    return and_(
        device.expires_at > now,
        device.created_at > now - timedelta(days=days),
        exists().where(
            User.id == device.user_id,
            User.status == UserStatus.ACTIVE,
            User.session_version == device.session_version,
        ),
        or_(
            exists().where(
                MfaFactor.user_id == device.user_id,
                MfaFactor.confirmed_at.is_not(None),
                MfaFactor.confirmed_at <= device.created_at,
            ),
            exists().where(
                PasskeyCredential.user_id == device.user_id,
                PasskeyCredential.created_at <= device.created_at,
            ),
        ),
    )


@dataclass(frozen=True)
class RememberedBrowser:
    """One of a person's remembered browsers, as their two-step page lists it."""

    id: int
    label: str
    created_at: datetime
    expires_at: datetime  # when it stops, the setting's bound included
    last_used_at: datetime | None
    this_browser: bool  # the browser asking


@dataclass(frozen=True)
class Remembered:
    """The new cookie's value, and how long it lasts (seconds)."""

    token: str
    max_age: int


@dataclass(frozen=True)
class Skip:
    """What the password step's browser gets from its cookie: a session (the second step
    skipped), or None; and whether its cookie names nothing live any more (to drop it)."""

    issued: IssuedToken | None
    forget_cookie: bool = False


class RememberedDeviceService:
    def __init__(
        self,
        session: Session,
        settings: Settings,
        auth: AuthService,
        uow: UnitOfWork,
        mfa: MfaService,
    ) -> None:
        self.session = session
        self.settings = settings
        self.auth = auth
        self.uow = uow
        self.mfa = mfa

    @property
    def days(self) -> int:
        """RINGFENCE_MFA_REMEMBER_DAYS: 0, remembering is off."""
        return self.settings.mfa_remember_days

    # -- remembering, at the second step -------------------------------------------------

    def remember(
        self,
        ticket: str,
        user_agent: str,
        client: str = "",
        request_id: str | None = None,
        replacing: str = "",
    ) -> Remembered | None:
        """Remember the browser that has just passed the second step of ``ticket`` (the
        ticket that step used, a moment ago); None when remembering is off, or the ticket
        is not one a second step has just used. ``replacing``: the browser's cookie from
        before, whose row (if it is this person's) goes, as do their rows that are no
        longer live."""
        if not self.days:
            return None
        row = self.session.scalar(
            select(UserToken).where(
                UserToken.token_hash == token_digest(ticket[:MAX_TOKEN]),
                UserToken.purpose == TokenPurpose.MFA_CHALLENGE,
            )
        )
        now = utcnow()
        if row is None or row.used_at is None or now - row.used_at > REMEMBER_WITHIN:
            return None
        user = self.session.get(User, row.user_id)
        if user is None or user.status != UserStatus.ACTIVE:
            return None
        token = new_token()
        with self.uow.events_only(self_actor(user, client, request_id)) as changes:
            replaced = self._sweep(user.id, replacing, now)
            device = RememberedDevice(
                user_id=user.id,
                token_hash=token_digest(token),
                session_version=user.session_version,
                label=device_label(user_agent)[:MAX_LABEL],
                created_at=now,
                expires_at=now + timedelta(days=self.days),
            )
            self.session.add(device)
            self.session.flush()
            changes.audit(
                "mfa.device_remembered",
                AuditTarget.USER,
                user.id,
                user.name,
                after={
                    "device": device.id,
                    "label": device.label,
                    "days": self.days,
                    "source_address": client or None,
                }
                | ({"replaces": replaced} if replaced else {}),
            )
        return Remembered(token, self.days * 86400)

    def _sweep(self, user_id: int, replacing: str, now: datetime) -> int | None:
        """Delete the person's rows that are no longer live, and the one this browser's
        earlier cookie names if it is theirs (its id, audited as replaced)."""
        replaced = None
        if replacing:
            replaced = self.session.scalar(
                select(RememberedDevice.id).where(
                    RememberedDevice.token_hash == token_digest(replacing[:MAX_TOKEN]),
                    RememberedDevice.user_id == user_id,
                )
            )
        self.session.execute(
            delete(RememberedDevice)
            .where(
                RememberedDevice.user_id == user_id,
                or_(RememberedDevice.id == replaced, not_(live(now, self.days))),
            )
            .execution_options(synchronize_session=False)
        )
        return replaced

    # -- the password step ----------------------------------------------------------------

    def skip_second_step(
        self, ticket: str, token: str, client: str = "", request_id: str | None = None
    ) -> Skip:
        """A session for the person of the password step's ``ticket`` (a right password,
        a moment ago) when ``token`` (the browser's cookie) names a live remembered
        browser of theirs: the ticket is used, the skip audited (``auth.mfa_remembered``,
        then ``auth.login``). Otherwise no session, and the second step goes on as usual;
        a cookie that names nothing, or an ended browser, is refused (audited
        ``auth.mfa_remember_refused`` with the reason) and should be dropped. Another
        person's cookie does nothing for this one (refused, audited, and kept: it is
        theirs)."""
        user_id = self.mfa.ticket_user_id(ticket) if self.days and token else None
        if user_id is None:
            return Skip(None)
        now = utcnow()
        row = self.session.scalar(
            select(RememberedDevice).where(
                RememberedDevice.token_hash == token_digest(token[:MAX_TOKEN])
            )
        )
        if row is None:
            return self._refuse(user_id, None, "unknown or forgotten browser", client, request_id)
        if row.user_id != user_id:
            self._refuse(user_id, None, "another person's browser", client, request_id)
            return Skip(None)
        device_id, label = row.id, row.label
        try:
            ticket_row, user, actor = self.mfa.open_ticket(ticket, client, request_id)
        except (Unauthorized, TooManyRequests):
            return Skip(None)  # the code's page says why
        # In one statement, so that a browser forgotten (or ended) a moment ago is not
        # used: the row is touched only if it is live now.
        used = self.session.execute(
            update(RememberedDevice)
            .where(RememberedDevice.id == device_id, live(now, self.days))
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
        if used.rowcount != 1:  # type: ignore[attr-defined]
            reason = self._why_ended(device_id, now)
            self.session.execute(delete(RememberedDevice).where(RememberedDevice.id == device_id))
            return self._refuse(user_id, device_id, reason, client, request_id)
        if not claim_user_token(self.session, ticket_row.id):
            self.session.rollback()
            return Skip(None)
        self.uow.record(  # commits the ticket's use and the browser's
            actor,
            "auth.mfa_remembered",
            AuditTarget.USER,
            target_id=user.id,
            target_name=user.name,
            after={"device": device_id, "label": label, "source_address": client or None},
        )
        return Skip(self.auth.start_session(user, "auth.login", client, request_id))

    def _why_ended(self, device_id: int, now: datetime) -> str:
        """Which rule ended a remembered browser, in words for the audit trail."""
        row = self.session.get(RememberedDevice, device_id)
        user = self.session.get(User, row.user_id) if row else None
        if row is None or user is None:
            return "forgotten"
        if row.expires_at <= now or row.created_at <= now - timedelta(days=self.days):
            return "expired"
        if user.status != UserStatus.ACTIVE or user.session_version != row.session_version:
            return "ended with the person's sessions (password changed or reset, factors reset)"
        return "the factors it was remembered with are gone"

    def _refuse(
        self,
        user_id: int,
        device_id: int | None,
        reason: str,
        client: str,
        request_id: str | None,
    ) -> Skip:
        user = self.session.get(User, user_id)
        self.uow.record(  # commits the deletion of an ended browser's row, if any
            self_actor(user, client, request_id),
            "auth.mfa_remember_refused",
            AuditTarget.USER,
            target_id=user_id,
            target_name=user.name if user else None,
            after={"reason": reason, "source_address": client or None}
            | ({"device": device_id} if device_id is not None else {}),
        )
        return Skip(None, forget_cookie=True)

    # -- the person's own list --------------------------------------------------------------

    def offered(self, user_id: int) -> bool:
        """Whether the second step may offer to remember the browser (the setting is on
        and the person has a factor): what the two-step page's list shows beside."""
        return bool(self.days) and bool(self.auth.second_factors(user_id))

    def of_person(self, user_id: int, token: str = "") -> list[RememberedBrowser]:
        """The person's live remembered browsers, newest first; ``token`` (the asking
        browser's cookie) marks this one."""
        now = utcnow()
        rows = self.session.scalars(
            select(RememberedDevice)
            .where(RememberedDevice.user_id == user_id, live(now, self.days))
            .order_by(RememberedDevice.created_at.desc(), RememberedDevice.id.desc())
        )
        mine = token_digest(token[:MAX_TOKEN]) if token else ""
        bound = timedelta(days=self.days)
        return [
            RememberedBrowser(
                row.id,
                row.label,
                row.created_at,
                min(row.expires_at, row.created_at + bound),
                row.last_used_at,
                row.token_hash == mine,
            )
            for row in rows
        ]

    def forget(self, actor: Actor, device_id: int, token: str = "") -> bool:
        """Forget one of the caller's remembered browsers (another person's id is
        NotFound, as an unknown one); whether it was the one ``token`` (the asking
        browser's cookie) names."""
        user = self._user(actor)
        row = self.session.scalar(
            select(RememberedDevice).where(
                RememberedDevice.id == device_id, RememberedDevice.user_id == user.id
            )
        )
        if row is None:
            raise NotFound(f"Remembered browser {device_id} not found")
        this = bool(token) and row.token_hash == token_digest(token[:MAX_TOKEN])
        with self.uow.events_only(actor) as changes:
            changes.audit(
                "mfa.device_forgotten",
                AuditTarget.USER,
                user.id,
                user.name,
                before={"device": row.id, "label": row.label},
            )
            self.session.delete(row)
        return this

    def forget_all(self, actor: Actor, token: str = "") -> tuple[int, bool]:
        """Forget every remembered browser of the caller: how many were live (none:
        nothing changed, nothing audited), and whether the one ``token`` names was
        among them."""
        user = self._user(actor)
        now = utcnow()
        mine = select(RememberedDevice.id).where(RememberedDevice.user_id == user.id)
        with self.uow.events_only(actor) as changes:
            count = len(self.session.scalars(mine.where(live(now, self.days))).all())
            this = bool(token) and (
                self.session.scalar(
                    mine.where(RememberedDevice.token_hash == token_digest(token[:MAX_TOKEN]))
                )
                is not None
            )
            gone = self.session.execute(
                delete(RememberedDevice)
                .where(RememberedDevice.user_id == user.id)
                .execution_options(synchronize_session=False)
            )
            if gone.rowcount:  # type: ignore[attr-defined]
                changes.audit(
                    "mfa.devices_forgotten",
                    AuditTarget.USER,
                    user.id,
                    user.name,
                    after={"forgotten": count},
                )
        return count, this

    # -- upkeep -----------------------------------------------------------------------------

    def forget_ended(self) -> int:
        """Delete every remembered browser that is no longer live (expired, beyond the
        setting, or ended by its person's password, factors or status; all of them while
        the setting is 0): how many. Not audited one by one: what ended them was."""
        gone = self.session.execute(
            delete(RememberedDevice)
            .where(not_(live(utcnow(), self.days)))
            .execution_options(synchronize_session=False)
        )
        self.session.commit()
        return int(gone.rowcount)  # type: ignore[attr-defined]

    def _user(self, actor: Actor) -> User:
        user = self.session.get(User, actor.user_id) if actor.user_id is not None else None
        if user is None:
            raise Unauthorized("Sign in as a person to manage your remembered browsers")
        return user

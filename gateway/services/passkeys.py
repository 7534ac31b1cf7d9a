"""Passkeys and security keys (WebAuthn) as a person's factors: registered by the
signed-in person (named, listed, removed), used as the second step after a right
password, and as a sign-in of their own (passwordless, with a discoverable credential
whose user handle names the account). The ceremonies are gateway.identity.passkeys'; the
rules they share with the authenticator app (the last factor, the recovery codes, the
ticket, the reset) are gateway.services.mfa's.

Every ceremony starts with a challenge made here: 32 random bytes, stored as their
SHA-256 with the ceremony's purpose, the person it is for (none for a passwordless
sign-in), and the SHA-256 of what binds it to one browser (the console session for a
registration, the sign-in page's cookie for a passwordless sign-in, the password step's
ticket for a second step). The answer names its challenge (in clientDataJSON); it counts
only for that purpose, person and browser, once (a conditional update, committed before
the signature is even checked: a refused answer uses it up too), and for
``CHALLENGE_TTL``. A passwordless sign-in answers the same, throttled, whatever went
wrong: an unknown passkey tells nobody which exist.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.config import Settings
from gateway.db.models import (
    PasskeyChallenge,
    PasskeyCredential,
    User,
    UserStatus,
    utcnow,
)
from gateway.errors import (
    Conflict,
    InvalidInput,
    InvalidPasskey,
    NotFound,
    SsoRequired,
    TooManyRequests,
    Unauthorized,
)
from gateway.identity import passkeys as webauthn
from gateway.identity.passkeys import PasskeyRefused
from gateway.identity.security import token_digest
from gateway.services.auth import AuthService, IssuedToken, claim_user_token, holds_everywhere
from gateway.services.base import Actor, AuditTarget, UnitOfWork, self_actor
from gateway.services.mfa import EXPIRED, LAST_FACTOR, MfaService, RecoveryCodes

CHALLENGE_TTL = timedelta(minutes=3)
REGISTER, SIGN_IN, SECOND_FACTOR = "register", "sign_in", "second_factor"
# A signed-in person confirming a change to their own factors (removing a passkey,
# renewing recovery codes) with one of their passkeys.
CONFIRM = "confirm"
MAX_NAME = 64
MAX_PASSKEYS = 20
NOT_SIGNED_IN = "That passkey could not sign you in"
NOT_ACCEPTED = "The passkey was not accepted; try again, or use another way to sign in"
NOT_REGISTERED = "The passkey was not registered: your browser's answer did not verify"
NOT_CONFIRMED = "The passkey was not accepted; try again, or confirm with a code"
CONFIRM_FIRST = (
    "Confirm it is you: a code from your authenticator app, a recovery code, or one of "
    "your passkeys"
)


@dataclass(frozen=True)
class Passkey:
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    backed_up: bool  # synced by its provider (a passkey), or bound to one device


@dataclass(frozen=True)
class PasskeyAdded:
    passkey: Passkey
    recovery_codes: list[str]  # new ones, shown this once; empty when theirs stay


@dataclass(frozen=True)
class Confirmation:
    """What a signed-in person shows to change their own second factors, so that a
    stolen session alone cannot strip or renew them: a code (from the authenticator app,
    or a recovery code), or one of their passkeys' answer to a challenge of
    :meth:`PasskeyService.confirmation_options` made for the same browser."""

    code: str = ""
    credential: Mapping[str, Any] | None = None


def _view(row: PasskeyCredential) -> Passkey:
    return Passkey(row.id, row.name, row.created_at, row.last_used_at, row.backed_up)


def checked_name(name: str) -> str:
    """A passkey's name as kept: trimmed, printable, 1 to 64 characters."""
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME or not name.isprintable():
        message = f"Name the passkey: 1 to {MAX_NAME} printable characters"
        raise InvalidInput(message, errors={"name": [message]})
    return name


class PasskeyService:
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
        self.throttle = auth.throttle
        self.uow = uow
        self.mfa = mfa

    @property
    def rp(self) -> webauthn.RelyingParty:
        return webauthn.relying_party(self.settings.public_url)

    # -- the person's own passkeys ------------------------------------------------------

    def of_person(self, user_id: int) -> list[Passkey]:
        rows = self.session.scalars(
            select(PasskeyCredential)
            .where(PasskeyCredential.user_id == user_id)
            .order_by(PasskeyCredential.id)
        )
        return [_view(row) for row in rows]

    def own(self, actor: Actor, passkey_id: int) -> Passkey:
        """One of the caller's passkeys (another's is NotFound, as an unknown id)."""
        return _view(self._own(self._user(actor).id, passkey_id))

    def registration_options(self, actor: Actor, binding: str, name: str) -> dict[str, Any]:
        """Options for the browser to make a passkey for the caller (``name`` checked
        now, so that a bad one fails before the ceremony)."""
        user = self._user(actor)
        checked_name(name)
        existing = self._rows(user.id)
        if len(existing) >= MAX_PASSKEYS:
            raise Conflict(f"You have {MAX_PASSKEYS} passkeys; remove one first")
        # One user handle for all of a person's passkeys: the first one's, or a new one.
        handle = existing[0].user_handle if existing else webauthn.new_user_handle()
        challenge = self._new_challenge(REGISTER, binding, user.id, handle)
        return webauthn.registration_options(
            self.rp,
            challenge,
            handle,
            user.email,
            user.name,
            [row.credential_id for row in existing],
        )

    def register(
        self, actor: Actor, binding: str, credential: Mapping[str, Any], name: str
    ) -> PasskeyAdded:
        """Keep the passkey the browser made for the caller's challenge; with recovery
        codes (shown once) when it is their first factor. A session good only for
        enrolling becomes whole."""
        user = self._user(actor)
        name = checked_name(name)
        try:
            challenge, handle = self._claim(credential, REGISTER, binding, user.id)
            made = webauthn.verify_registration(self.rp, credential, challenge)
        except PasskeyRefused as refused:
            self.uow.record(
                actor,
                "passkey.registration_refused",
                AuditTarget.USER,
                target_id=user.id,
                target_name=user.name,
                after={"reason": refused.reason},
            )
            raise InvalidInput(NOT_REGISTERED) from refused
        try:
            with self.uow.events_only(actor) as changes:
                row = PasskeyCredential(
                    user_id=user.id,
                    credential_id=made.credential_id,
                    # The handle the options named (the authenticator keeps it, and answers
                    # with it at a passwordless sign-in).
                    user_handle=handle,
                    public_key=made.public_key,
                    sign_count=made.sign_count,
                    name=name,
                    transports=made.transports or None,
                    aaguid=made.aaguid,
                    backed_up=made.backed_up,
                )
                self.session.add(row)
                self.session.flush()
                codes = self.mfa.codes_for_first_factor(user.id)
                self.mfa.finish_enrolment(user.id)
                changes.audit(
                    "passkey.registered",
                    AuditTarget.USER,
                    user.id,
                    user.name,
                    after={
                        "passkey": row.id,
                        "name": name,
                        "synced": made.backed_up,
                        "recovery_codes": len(codes),
                    },
                )
        except IntegrityError as exc:
            raise Conflict("This passkey is registered already") from exc
        return PasskeyAdded(_view(row), codes)

    def remove(
        self, actor: Actor, passkey_id: int, binding: str, confirmation: Confirmation
    ) -> Passkey:
        """Remove one of the caller's passkeys (another's is NotFound, as an unknown id),
        confirmed (:class:`Confirmation`; ``binding`` the browser's, for a passkey's
        answer); not the last factor while a policy asks them for one."""
        user = self._user(actor)
        self._own(user.id, passkey_id)
        if self.mfa.factors_left(user.id) == 1 and self.mfa.must_enrol(user):
            raise Conflict(LAST_FACTOR)  # told before a code is spent on it
        confirmed_with = self.confirm(actor, user, binding, confirmation)
        with self.uow.events_only(actor) as changes:
            self.mfa.lock_factors(user.id)
            row = self._own(user.id, passkey_id)  # unless removed meanwhile
            removed = _view(row)
            self.session.delete(row)
            self.session.flush()
            self.mfa.require_a_factor_left(user)
            self.mfa.forget_codes_without_factors(user.id)
            changes.audit(
                "passkey.removed",
                AuditTarget.USER,
                user.id,
                user.name,
                before={"passkey": removed.id, "name": removed.name},
                after={"confirmed_with": confirmed_with},
            )
        return removed

    def renew_recovery_codes(
        self, actor: Actor, binding: str, confirmation: Confirmation
    ) -> RecoveryCodes:
        """New recovery codes (the old ones stop working), confirmed by a code or, for a
        person whose factors are passkeys alone, a passkey."""
        user = self._user(actor)
        confirmed_with = self.confirm(actor, user, binding, confirmation)
        return self.mfa.issue_recovery_codes(actor, user, confirmed_with)

    # -- confirming a change to one's own factors ----------------------------------------

    def confirmation_options(self, actor: Actor, binding: str) -> dict[str, Any]:
        """Options for the caller to confirm a change with one of their passkeys, the
        challenge bound to ``binding`` (their console session)."""
        user = self._user(actor)
        rows = self._rows(user.id)
        if not rows:
            raise Conflict("You have no passkey; confirm with a code")
        challenge = self._new_challenge(CONFIRM, binding, user.id)
        return webauthn.authentication_options(
            self.rp, challenge, [(row.credential_id, row.transports) for row in rows]
        )

    def confirm(self, actor: Actor, user: User, binding: str, confirmation: Confirmation) -> str:
        """Check ``confirmation`` for ``user`` (a code is used up in the caller's
        transaction; a passkey's challenge at once): how they confirmed (totp,
        recovery_code, passkey). Refusals are throttled and audited as wrong codes are
        (InvalidInput); TooManyRequests once the person or client is over the limit."""
        if confirmation.credential is not None:
            return self._confirm_with_passkey(actor, user, binding, confirmation.credential)
        if confirmation.code:
            return self.mfa.confirm_with_code(actor, user, confirmation.code)
        raise InvalidInput(CONFIRM_FIRST, errors={"code": [CONFIRM_FIRST]})

    def _confirm_with_passkey(
        self, actor: Actor, user: User, binding: str, credential: Mapping[str, Any]
    ) -> str:
        self.throttle.second_factor_check(user.id, actor.source_address or "")
        try:
            passkey, used = self._asserted_by_own(credential, CONFIRM, binding, user.id)
        except PasskeyRefused as refused:
            self.mfa.refuse_confirmation(
                actor, user, NOT_CONFIRMED, method="passkey", reason=refused.reason
            )
        self.throttle.second_factor_succeeded(user.id)
        self._note_use(passkey, used)
        return "passkey"

    # -- passwordless sign-in -----------------------------------------------------------

    def sign_in_options(self, binding: str, client: str = "") -> dict[str, Any]:
        """Options for a passwordless sign-in in the browser bound by ``binding``: no
        credentials listed (the authenticator offers those it keeps for this site), user
        verification required (the passkey is both factors)."""
        self.throttle.client_check(client)
        challenge = self._new_challenge(SIGN_IN, binding, None)
        return webauthn.authentication_options(self.rp, challenge, user_verification=True)

    def sign_in(
        self,
        binding: str,
        credential: Mapping[str, Any],
        client: str = "",
        request_id: str | None = None,
    ) -> IssuedToken:
        """A session for the person whose passkey signed this browser's challenge, with
        the user handle their passkeys carry and the person verified; InvalidPasskey, the
        same whatever went wrong (the reason audited), and throttled per client."""
        try:
            self.throttle.client_check(client)
        except TooManyRequests:
            self.uow.record(
                self_actor(None, client, request_id),
                "auth.passkey_throttled",
                AuditTarget.LOGIN,
                after={"source_address": client or None},
            )
            raise
        row: PasskeyCredential | None = None
        try:
            challenge, _ = self._claim(credential, SIGN_IN, binding, None)
            row = self._credential(credential)
            if row is None:
                raise PasskeyRefused("unknown credential")
            sent_handle = webauthn.sent_user_handle(credential)
            if sent_handle is None or not hmac.compare_digest(sent_handle, row.user_handle):
                raise PasskeyRefused("user handle is not the credential's")
            user = self.session.get(User, row.user_id)
            if user is None or user.status != UserStatus.ACTIVE:
                raise PasskeyRefused("account not active")
            used = webauthn.verify_assertion(
                self.rp, credential, challenge, row.public_key, row.sign_count, True
            )
        except PasskeyRefused as refused:
            self._refuse_sign_in(refused.reason, row, client, request_id)
            raise InvalidPasskey(NOT_SIGNED_IN) from refused
        assert row is not None
        self._hold_to_sso(user, client, request_id)
        self._note_use(row, used)
        return self.auth.start_session(user, "auth.passkey_login", client, request_id)

    def _hold_to_sso(self, user: User, client: str, request_id: str | None) -> None:
        """SsoRequired for a person whose address's domain a workspace verified and holds
        to its single sign-on: they sign in there, not with a passkey (which would outlive
        their access at the provider); the installation's operators excepted, as for
        passwords (gateway.services.auth). Asked after the passkey verified, so that the
        answer tells only its holder."""
        route = self.auth.sso_route(user.email)
        if route is None or not route.required or holds_everywhere(self.session, user):
            return
        self.session.rollback()
        self.uow.record(
            self_actor(user, client, request_id),
            "auth.sso_required",
            AuditTarget.USER,
            target_id=user.id,
            target_name=user.name,
            after={"method": "passkey", "domain": route.domain, "source_address": client or None},
        )
        raise SsoRequired(
            f"People at {route.domain} sign in with their organisation's single sign-on, "
            "not a passkey here",
            domain=route.domain,
            sso_login=f"/auth/sso/connections/{route.connection_id}/login",
        )

    def _refuse_sign_in(
        self, reason: str, row: PasskeyCredential | None, client: str, request_id: str | None
    ) -> None:
        self.session.rollback()
        self.throttle.client_failed(client)
        user = self.session.get(User, row.user_id) if row is not None else None
        self.uow.record(
            self_actor(user, client, request_id),
            "auth.passkey_failed",
            AuditTarget.USER if user else AuditTarget.LOGIN,
            target_id=user.id if user else None,
            target_name=user.name if user else None,
            after={"reason": reason, "source_address": client or None},
        )

    # -- the second step ----------------------------------------------------------------

    def second_factor_options(self, ticket: str) -> dict[str, Any]:
        """Options for the second step of the password step's ``ticket``: that person's
        passkeys."""
        user_id = self._ticket_user(ticket)
        rows = self._rows(user_id)
        if not rows:
            raise Conflict("You have no passkey; use a code")
        challenge = self._new_challenge(SECOND_FACTOR, ticket, user_id)
        return webauthn.authentication_options(
            self.rp, challenge, [(row.credential_id, row.transports) for row in rows]
        )

    def verify_second_factor(
        self,
        ticket: str,
        credential: Mapping[str, Any],
        client: str = "",
        request_id: str | None = None,
    ) -> IssuedToken:
        """A session for the ticket's holder whose passkey signed the challenge made for
        this ticket. Refusals are throttled and audited as wrong codes are; the ticket
        survives them (the challenge does not), and is used by the first success."""
        ticket_row, user, actor = self.mfa.open_ticket(ticket, client, request_id)
        try:
            passkey, used = self._asserted_by_own(credential, SECOND_FACTOR, ticket, user.id)
        except PasskeyRefused as refused:
            self.mfa.second_step_failed(
                actor, user, client, method="passkey", reason=refused.reason
            )
            raise InvalidPasskey(NOT_ACCEPTED) from refused
        if not claim_user_token(self.session, ticket_row.id):
            self.session.rollback()
            raise Unauthorized(EXPIRED)
        self.throttle.second_factor_succeeded(user.id)
        self._note_use(passkey, used)
        self.uow.record(  # commits the ticket's use and the passkey's counter
            actor,
            "auth.mfa_verified",
            AuditTarget.USER,
            target_id=user.id,
            after={"method": "passkey", "passkey": passkey.id},
        )
        return self.auth.start_session(user, "auth.login", client, request_id)

    # -- challenges ---------------------------------------------------------------------

    def _new_challenge(
        self, purpose: str, binding: str, user_id: int | None, user_handle: str | None = None
    ) -> bytes:
        if not binding:
            raise Unauthorized("Reload the page and try again")  # no session, cookie or ticket
        now = utcnow()
        challenge = webauthn.new_challenge()
        # Challenges last minutes: whoever makes one sweeps the ones past their time.
        self.session.execute(delete(PasskeyChallenge).where(PasskeyChallenge.expires_at < now))
        self.session.add(
            PasskeyChallenge(
                challenge_hash=webauthn.challenge_digest(challenge),
                purpose=purpose,
                user_id=user_id,
                binding_hash=token_digest(binding),
                user_handle=user_handle,
                expires_at=now + CHALLENGE_TTL,
            )
        )
        self.session.commit()
        return challenge

    def _claim(
        self, credential: Mapping[str, Any], purpose: str, binding: str, user_id: int | None
    ) -> tuple[bytes, str]:
        """The challenge ``credential`` answers (and a registration's user handle), used
        up now (committed) if it was made for this purpose, person and browser, unused
        and in time; PasskeyRefused (saying which, for the audit trail) otherwise."""
        challenge = webauthn.sent_challenge(credential)
        if challenge is None:
            raise PasskeyRefused("not a WebAuthn answer")
        row = self.session.scalar(
            select(PasskeyChallenge).where(
                PasskeyChallenge.challenge_hash == webauthn.challenge_digest(challenge)
            )
        )
        if row is None:
            raise PasskeyRefused("unknown challenge")
        if row.purpose != purpose or row.user_id != user_id:
            raise PasskeyRefused("challenge of another ceremony")
        if not hmac.compare_digest(row.binding_hash, token_digest(binding)):
            raise PasskeyRefused("challenge of another browser")
        if row.used_at is not None:
            raise PasskeyRefused("challenge used already")
        if row.expires_at <= utcnow():
            raise PasskeyRefused("challenge expired")
        claimed = self.session.execute(
            update(PasskeyChallenge)
            .where(PasskeyChallenge.id == row.id, PasskeyChallenge.used_at.is_(None))
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        self.session.commit()
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            raise PasskeyRefused("challenge used already")
        return challenge, row.user_handle or ""

    def _asserted_by_own(
        self, credential: Mapping[str, Any], purpose: str, binding: str, user_id: int
    ) -> tuple[PasskeyCredential, webauthn.Asserted]:
        """The person's passkey that signed the challenge of ``purpose`` made for them in
        this browser (used up now), and what it asserted; PasskeyRefused otherwise."""
        challenge, _ = self._claim(credential, purpose, binding, user_id)
        passkey = self._credential(credential)
        if passkey is None or passkey.user_id != user_id:
            raise PasskeyRefused("not a passkey of this person")
        used = webauthn.verify_assertion(
            self.rp, credential, challenge, passkey.public_key, passkey.sign_count
        )
        return passkey, used

    # -- helpers ------------------------------------------------------------------------

    def _user(self, actor: Actor) -> User:
        user = self.session.get(User, actor.user_id) if actor.user_id is not None else None
        if user is None:
            raise Unauthorized("Sign in as a person to manage your own passkeys")
        return user

    def _own(self, user_id: int, passkey_id: int) -> PasskeyCredential:
        row = self.session.scalar(
            select(PasskeyCredential).where(
                PasskeyCredential.id == passkey_id, PasskeyCredential.user_id == user_id
            )
        )
        if row is None:
            raise NotFound(f"Passkey {passkey_id} not found")
        return row

    def _rows(self, user_id: int) -> list[PasskeyCredential]:
        return list(
            self.session.scalars(
                select(PasskeyCredential)
                .where(PasskeyCredential.user_id == user_id)
                .order_by(PasskeyCredential.id)
            )
        )

    def _credential(self, credential: Mapping[str, Any]) -> PasskeyCredential | None:
        credential_id = webauthn.sent_credential_id(credential)
        if credential_id is None:
            return None
        return self.session.scalar(
            select(PasskeyCredential).where(PasskeyCredential.credential_id == credential_id)
        )

    def _ticket_user(self, ticket: str) -> int:
        user_id = self.mfa.ticket_user_id(ticket)
        if user_id is None:
            raise Unauthorized(EXPIRED)
        return user_id

    def _note_use(self, row: PasskeyCredential, used: webauthn.Asserted) -> None:
        """The counter the authenticator reported (committed with the session's start)."""
        self.session.execute(
            update(PasskeyCredential)
            .where(PasskeyCredential.id == row.id)
            .values(sign_count=used.sign_count, backed_up=used.backed_up, last_used_at=utcnow())
            .execution_options(synchronize_session=False)
        )

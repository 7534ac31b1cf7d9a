"""Multi-factor authentication: a person's authenticator app (TOTP, RFC 6238) and one-time
recovery codes, and the second step of signing in. Passkeys and security keys (WebAuthn)
are factors too: gateway.services.passkeys registers them and verifies their ceremonies,
with the rules kept here (which factors a person has, the last one kept while a policy
asks for one, the recovery codes, the second step's ticket, the admin's reset).

Enrolment: the person asks for a secret (shown once, with its otpauth:// URI for a QR
code; stored sealed with the secret key), and a first code from the app confirms it;
confirming makes ten recovery codes, shown once and stored hashed. From then on a right
password answers ``mfa-required`` with a single-use ticket (gateway.services.auth) and
:meth:`MfaService.verify` turns ticket and code into a session. A TOTP code is accepted
once (the factor remembers the last time step used), guesses are throttled per person
and per client like passwords, and everything is audited, never a secret or a code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.config import MFA_POLICIES, Settings
from gateway.db.models import (
    AuthSession,
    MfaFactor,
    MfaRecoveryCode,
    PasskeyChallenge,
    PasskeyCredential,
    TokenPurpose,
    User,
    UserStatus,
    UserToken,
    Workspace,
    utcnow,
)
from gateway.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidMfaCode,
    TooManyRequests,
    Unauthorized,
)
from gateway.identity import totp
from gateway.identity.security import seal, token_digest, unseal
from gateway.services.auth import AuthService, IssuedToken, claim_user_token
from gateway.services.base import Actor, AuditTarget, Authorizer, UnitOfWork, self_actor
from gateway.services.permissions import Permission
from gateway.services.users import UserService
from gateway.services.workspaces import WorkspaceService

TOTP = "totp"
# "admins" in RINGFENCE_MFA_REQUIRED: whoever may change something in Ringfence.
ADMIN_PERMISSIONS = tuple(p for p in Permission if not p.value.endswith(":read"))
ISSUER = "Ringfence"
EXPIRED = "The sign-in has expired or is not valid; sign in again"
WRONG_CODE = "The code is not valid, or was used already"
LAST_FACTOR = (
    "Two-step sign-in is required of you here: keep at least one authenticator app, "
    "passkey or security key"
)


@dataclass(frozen=True)
class MfaStatus:
    totp: bool  # an authenticator app is confirmed
    totp_enrolled_at: datetime | None
    pending: bool  # an enrolment waits for its first code
    recovery_codes_left: int
    passkeys: int = 0  # passkeys and security keys registered


@dataclass(frozen=True)
class FactorsOfPerson:
    """Another person's second factors, as an admin who may reset them sees them."""

    totp: bool  # an authenticator app is confirmed
    totp_enrolled_at: datetime | None
    pending: bool  # an enrolment waits for its first code
    resettable: bool  # :meth:`MfaService.reset` would take something away now
    passkeys: int = 0  # passkeys and security keys registered


@dataclass(frozen=True)
class WorkspacePolicy:
    workspace: str
    required: str  # the workspace's own: off | admins | everyone
    installation: str  # RINGFENCE_MFA_REQUIRED, which applies as well


@dataclass(frozen=True)
class TotpEnrolment:
    secret: str
    otpauth_uri: str


@dataclass(frozen=True)
class RecoveryCodes:
    recovery_codes: list[str]


class MfaService:
    def __init__(
        self,
        session: Session,
        settings: Settings,
        auth: AuthService,
        uow: UnitOfWork,
        users: UserService,
        authorizer: Authorizer,
        workspaces: WorkspaceService,
    ) -> None:
        self.session = session
        self.settings = settings
        self.auth = auth
        self.throttle = auth.throttle
        self.uow = uow
        self.users = users
        self.authorizer = authorizer
        self.workspaces = workspaces

    # -- the installation's policy (RINGFENCE_MFA_REQUIRED) -----------------------------

    def must_enrol(self, user: User) -> bool:
        """Whether a policy asks ``user`` for a second factor: the installation's, or that
        of a workspace where they have a role; ``everyone``, or ``admins``: holders of any
        of the gateway's own permissions other than ``:read`` ones (the installation's:
        in any of their workspaces; a workspace's: in that one)."""
        slugs = {grant.workspace_slug for grant in user.grants}
        policies = dict.fromkeys(slugs, self.settings.mfa_required)
        if self.settings.mfa_required == "everyone":
            return True
        if slugs:
            for slug, policy in self.session.execute(
                select(Workspace.slug, Workspace.mfa_required).where(Workspace.slug.in_(slugs))
            ):
                if policy == "everyone":
                    return True
                if policy == "admins":
                    policies[slug] = "admins"
        actor = Actor(user.id, user.name)
        return any(
            self.authorizer.can(actor, permission, slug)
            for slug, policy in policies.items()
            if policy == "admins"
            for permission in ADMIN_PERMISSIONS
        )

    def workspace_policy(self, actor: Actor, slug: str) -> WorkspacePolicy:
        workspace = self.workspaces.get(actor, slug)  # NotFound where they may not read
        return WorkspacePolicy(slug, workspace.mfa_required, self.settings.mfa_required)

    def set_workspace_policy(self, actor: Actor, slug: str, required: str) -> WorkspacePolicy:
        """Who of the workspace's members must use a second factor; needs
        ``settings:write`` there. Takes effect at each member's next sign-in."""
        workspace = self.workspaces.get(actor, slug)
        self.authorizer.require(actor, Permission.SETTINGS_WRITE, slug)
        if required not in MFA_POLICIES:
            raise InvalidInput(
                "Use off, admins or everyone", errors={"required": ["Use off, admins or everyone"]}
            )
        before = workspace.mfa_required
        with self.uow.events_only(actor) as changes:
            workspace.mfa_required = required
            changes.audit(
                "workspace.mfa_policy_changed",
                AuditTarget.WORKSPACE,
                slug,
                workspace.name,
                slug,
                before={"mfa_required": before},
                after={"mfa_required": required},
            )
        return self.workspace_policy(actor, slug)

    # -- the person's own factors -------------------------------------------------------

    def status(self, user_id: int) -> MfaStatus:
        factor = self._factor(user_id)
        confirmed = factor is not None and factor.confirmed_at is not None
        return MfaStatus(
            totp=confirmed,
            totp_enrolled_at=factor.confirmed_at if factor else None,
            pending=factor is not None and not confirmed,
            recovery_codes_left=self._codes_left(user_id),
            passkeys=self.passkey_count(user_id),
        )

    def begin_totp(self, actor: Actor) -> TotpEnrolment:
        """A new secret for the caller's authenticator app, to be confirmed by a code.
        An unconfirmed enrolment is replaced; a confirmed one must be removed first."""
        user = self._user(actor)
        factor = self._factor(user.id)
        if factor is not None and factor.confirmed_at is not None:
            raise Conflict("An authenticator app is set up already; remove it first")
        secret = totp.new_secret()
        sealed = seal(self.settings.secret_key, {"secret": secret})
        try:
            with self.uow.events_only(actor) as changes:
                if factor is None:
                    self.session.add(MfaFactor(user_id=user.id, kind=TOTP, sealed_secret=sealed))
                else:
                    factor.sealed_secret, factor.last_step = sealed, None
                changes.audit(
                    "mfa.enrolment_started",
                    AuditTarget.USER,
                    user.id,
                    user.name,
                    after={"kind": TOTP},
                )
        except IntegrityError as exc:
            # Two enrolments started at the same moment (two tabs, a double click): the
            # person's one factor row is the other's; this one changed nothing.
            raise Conflict(
                "Another enrolment was started at the same moment; use that one, or start again"
            ) from exc
        return TotpEnrolment(secret, totp.provisioning_uri(secret, user.email, ISSUER))

    def pending_enrolment(self, actor: Actor) -> TotpEnrolment | None:
        """The enrolment waiting for its first code, to show again (a console page after
        a mistyped code); None once confirmed: from then on the secret is never shown."""
        user = self._user(actor)
        factor = self._factor(user.id)
        if factor is None or factor.confirmed_at is not None:
            return None
        secret = self._secret(factor)
        return TotpEnrolment(secret, totp.provisioning_uri(secret, user.email, ISSUER))

    def confirm_totp(self, actor: Actor, code: str) -> RecoveryCodes:
        """Turn the waiting enrolment on with a first code; the answer holds the recovery
        codes, the only time they are shown."""
        user = self._user(actor)
        factor = self._factor(user.id)
        if factor is None or factor.confirmed_at is not None:
            raise Conflict("No enrolment is waiting for a code; start one first")
        step = self._checked_step(actor, user, factor, code)
        now = utcnow()
        with self.uow.events_only(actor) as changes:
            factor.confirmed_at, factor.last_step, factor.last_used_at = now, step, now
            codes = self._new_recovery_codes(user.id)
            self.finish_enrolment(user.id)
            changes.audit(
                "mfa.enrolled",
                AuditTarget.USER,
                user.id,
                user.name,
                after={"kind": TOTP, "recovery_codes": len(codes)},
            )
        return RecoveryCodes(codes)

    def renew_recovery_codes(self, actor: Actor, code: str) -> RecoveryCodes:
        """New recovery codes for old (all of which stop working), confirmed by a current
        code from the app or a recovery code (the console also takes a passkey:
        gateway.services.passkeys)."""
        user = self._user(actor)
        return self.issue_recovery_codes(actor, user, self.confirm_with_code(actor, user, code))

    def issue_recovery_codes(self, actor: Actor, user: User, confirmed_with: str) -> RecoveryCodes:
        """New recovery codes for a person who has just confirmed it is them (how:
        ``confirmed_with``), committed with that confirmation; the old ones stop working.
        Only while they have a factor the codes stand in for."""
        if not self.factors_left(user.id):
            self.session.rollback()
            raise Conflict("Recovery codes stand in for a second factor: set one up first")
        with self.uow.events_only(actor) as changes:
            codes = self._new_recovery_codes(user.id)
            changes.audit(
                "mfa.recovery_codes_renewed",
                AuditTarget.USER,
                user.id,
                user.name,
                after={"recovery_codes": len(codes), "confirmed_with": confirmed_with},
            )
        return RecoveryCodes(codes)

    def remove_totp(self, actor: Actor, code: str) -> None:
        """Remove the authenticator app, with a current code (or a recovery code): two-step
        sign-in is off unless passkeys remain. Not the last factor while a policy asks
        the person for one."""
        user = self._user(actor)
        factor = self._confirmed(user.id)
        if self.must_enrol(user) and not self.passkey_count(user.id):
            raise Conflict(LAST_FACTOR)
        confirmed_with = self.confirm_with_code(actor, user, code)
        with self.uow.events_only(actor) as changes:
            self.lock_factors(user.id)
            self.session.execute(delete(MfaFactor).where(MfaFactor.id == factor.id))
            self.require_a_factor_left(user)
            self.forget_codes_without_factors(user.id)
            changes.audit(
                "mfa.removed",
                AuditTarget.USER,
                user.id,
                user.name,
                after={"kind": TOTP, "confirmed_with": confirmed_with},
            )

    # -- confirming a change to one's own factors ----------------------------------------

    def confirm_with_code(self, actor: Actor, user: User, code: str) -> str:
        """A signed-in person confirms a change to their own factors (a stolen session
        alone must not strip or renew them) with a current code from their app, of a
        time step not used before, or an unused recovery code: used up in the caller's
        transaction, so that it counts once. Which it was (totp, recovery_code); wrong
        ones are throttled as wrong sign-in codes are (a right one clears the person's
        count, as at sign-in), audited, and a 422."""
        self.throttle.second_factor_check(user.id, actor.source_address or "")
        factor = self._factor(user.id)
        method: str | None = None
        if not totp.is_totp_code(code):
            method = self._use_recovery_code(user.id, code)
        elif factor is not None and factor.confirmed_at is not None:
            step = totp.matching_step(self._secret(factor), code, factor.last_step)
            method = TOTP if step is not None and self._use_step(factor, step) else None
        if method is None:
            self.refuse_confirmation(actor, user, WRONG_CODE, method="code")
        self.throttle.second_factor_succeeded(user.id)  # as a right code at sign-in
        return method

    def refuse_confirmation(
        self, actor: Actor, user: User, message: str, **details: object
    ) -> NoReturn:
        """Refuse a confirmation (a code, a passkey): what it changed undone, counted
        against the person's and the client's limits, audited (``mfa.code_refused``,
        with ``details``); InvalidInput with ``message``."""
        self.session.rollback()
        self.throttle.second_factor_failed(user.id, actor.source_address or "")
        self.uow.record(
            actor,
            "mfa.code_refused",
            AuditTarget.USER,
            target_id=user.id,
            target_name=user.name,
            after=details or None,
        )
        raise InvalidInput(message, errors={"code": [message]})

    # -- an admin's reset ---------------------------------------------------------------

    def reset(self, actor: Actor, user_id: int) -> int:
        """Take away every second factor of a person who lost them (they sign in with the
        password alone, and may enrol again), and end all their sessions; how many ended.
        Only for a person ``actor`` sees (another tenant's is NotFound, as an unknown id),
        with ``users:reset_mfa`` in every workspace where they hold a role and the right
        to grant each of their roles (an admin does not weaken the owner's sign-in)."""
        user, factor = self._resettable(actor, user_id)
        passkeys = self.passkey_count(user.id)
        with self.uow.events_only(actor) as changes:
            self._remove_factors(user.id)
            ended = self.auth.end_all_sessions(user, "second factors reset")
            changes.audit_each(
                {grant.workspace_slug for grant in user.grants},
                "mfa.reset",
                AuditTarget.USER,
                user.id,
                user.name,
                before={"totp": factor is not None and factor.confirmed_at is not None}
                | ({"passkeys": passkeys} if passkeys else {}),
                after={"totp": False, "sessions_ended": ended}
                | ({"passkeys": 0} if passkeys else {}),
            )
        return ended

    def factors_for_admin(self, actor: Actor, user_id: int) -> FactorsOfPerson | None:
        """What a console shows ``actor`` of another person's second factors: whether
        they have one and whether :meth:`reset` would take it away, by the same checks;
        None where :meth:`reset` would refuse ``actor`` whatever the factors (their own,
        a person beyond their rights), who then sees nothing of them. NotFound, as an
        unknown id, for a person ``actor`` does not see."""
        user = self.users.visible_user(actor, user_id)
        try:
            self._require_may_reset(actor, user)
        except Forbidden:
            return None
        factor = self._factor(user.id)
        confirmed = factor is not None and factor.confirmed_at is not None
        passkeys = self.passkey_count(user.id)
        return FactorsOfPerson(
            totp=confirmed,
            totp_enrolled_at=factor.confirmed_at if factor else None,
            pending=factor is not None and not confirmed,
            resettable=factor is not None or passkeys > 0,
            passkeys=passkeys,
        )

    def require_resettable(self, actor: Actor, user_id: int) -> None:
        """Refuse as :meth:`reset` would (NotFound, Forbidden, Conflict), changing
        nothing: what a confirmation asks before it offers the reset."""
        self._resettable(actor, user_id)

    def _resettable(self, actor: Actor, user_id: int) -> tuple[User, MfaFactor | None]:
        user = self.users.visible_user(actor, user_id)
        self._require_may_reset(actor, user)
        factor = self._factor(user.id)
        if factor is None and not self.passkey_count(user.id):
            raise Conflict(f"User {user_id} has no second factor")
        return user, factor

    def _require_may_reset(self, actor: Actor, user: User) -> None:
        """Forbidden unless ``actor`` may reset ``user``'s factors: someone else, with
        ``users:reset_mfa`` in every workspace where they hold a role and the right to
        grant each of their roles."""
        if actor.user_id == user.id:
            raise Forbidden(
                "Turn your own second factor off with a code (POST /auth/mfa/totp/remove)"
            )
        self.authorizer.require_all(
            actor, Permission.USERS_RESET_MFA, {grant.workspace_slug for grant in user.grants}
        )
        for grant in sorted(user.grants, key=lambda g: (g.workspace_slug, g.role)):
            self.authorizer.require_can_grant(
                actor, grant.role, grant.workspace_slug, verb="reset the factors of a holder of"
            )

    # -- the second step of signing in --------------------------------------------------

    def second_step_failed(self, actor: Actor, user: User, client: str, **details: object) -> None:
        """A refused second step (a wrong code, a passkey not accepted): what it changed
        undone, counted against the person's and the client's limits, and audited with
        ``details``."""
        self.session.rollback()
        self.throttle.second_factor_failed(user.id, client)
        self.uow.record(
            actor,
            "auth.mfa_failed",
            AuditTarget.USER,
            target_id=user.id,
            target_name=user.name,
            after={**details, "source_address": client or None},
        )

    def verify(
        self, ticket: str, code: str, client: str = "", request_id: str | None = None
    ) -> IssuedToken:
        """A session for the holder of the password step's ticket and a right code: a
        TOTP code of a step not used before, or an unused recovery code. The ticket is
        used once, by the first right code; wrong codes are throttled."""
        row, user, actor = self.open_ticket(ticket, client, request_id)
        # The ticket is claimed and the code used in one transaction: of two concurrent
        # uses one wins; a wrong code undoes the claim.
        if not claim_user_token(self.session, row.id):
            self.session.rollback()
            raise Unauthorized(EXPIRED)
        method, reason = self._use_code(user.id, code)
        if method is None:
            self.second_step_failed(actor, user, client, reason=reason)
            raise InvalidMfaCode(WRONG_CODE)
        self.throttle.second_factor_succeeded(user.id)
        after: dict[str, object] = {"method": method}
        if method == "recovery_code":
            after["recovery_codes_left"] = self._codes_left(user.id)
        self.uow.record(  # commits the claim and the code's use
            actor, "auth.mfa_verified", AuditTarget.USER, target_id=user.id, after=after
        )
        return self.auth.start_session(user, "auth.login", client, request_id)

    def open_ticket(
        self, ticket: str, client: str = "", request_id: str | None = None
    ) -> tuple[UserToken, User, Actor]:
        """The password step's ticket, its person and them as the actor, if the ticket is
        unused, unexpired and theirs is an active account (Unauthorized, audited, if not)
        and their second step is not throttled (TooManyRequests, audited)."""
        row = self._ticket_row(ticket)
        user = self.session.get(User, row.user_id) if row else None
        if row is None or user is None:
            raise Unauthorized(EXPIRED)
        actor = self_actor(user, client, request_id)
        if (
            row.used_at is not None
            or row.expires_at <= utcnow()
            or user.status != UserStatus.ACTIVE
        ):
            self.uow.record(actor, "auth.mfa_expired", AuditTarget.USER, target_id=user.id)
            raise Unauthorized(EXPIRED)
        try:
            self.throttle.second_factor_check(user.id, client)
        except TooManyRequests:
            self.uow.record(actor, "auth.mfa_throttled", AuditTarget.USER, target_id=user.id)
            raise
        return row, user, actor

    def ticket_methods(self, ticket: str) -> list[str]:
        """The second steps open to the holder of a live ticket (what the console's code
        page offers); empty for a ticket that is not (nothing is told of whose)."""
        user_id = self.ticket_user_id(ticket)
        return [] if user_id is None else self.auth.second_factors(user_id)

    def ticket_user_id(self, ticket: str) -> int | None:
        """Whose a live (unused, unexpired) ticket is; None for any other."""
        row = self._ticket_row(ticket) if ticket else None
        if row is None or row.used_at is not None or row.expires_at <= utcnow():
            return None
        return row.user_id

    def _ticket_row(self, ticket: str) -> UserToken | None:
        return self.session.scalar(
            select(UserToken).where(
                UserToken.token_hash == token_digest(ticket),
                UserToken.purpose == TokenPurpose.MFA_CHALLENGE,
            )
        )

    # -- what passkeys share with the app ------------------------------------------------

    def passkey_count(self, user_id: int) -> int:
        return int(
            self.session.scalar(
                select(func.count())
                .select_from(PasskeyCredential)
                .where(PasskeyCredential.user_id == user_id)
            )
            or 0
        )

    def factors_left(self, user_id: int) -> int:
        """Confirmed factors: the authenticator app, and each passkey."""
        factor = self._factor(user_id)
        return int(factor is not None and factor.confirmed_at is not None) + self.passkey_count(
            user_id
        )

    def lock_factors(self, user_id: int) -> None:
        """Take the person's row lock (PostgreSQL; SQLite has one writer at a time) before
        removing a factor, so that two removals at once cannot each leave the other as
        the last factor and both go through."""
        self.session.execute(select(User.id).where(User.id == user_id).with_for_update())

    def require_a_factor_left(self, user: User) -> None:
        """Conflict (undoing the removal) when none is left and a policy asks the person
        for one; called after the removal, under :meth:`lock_factors`."""
        if not self.factors_left(user.id) and self.must_enrol(user):
            self.session.rollback()
            raise Conflict(LAST_FACTOR)

    def forget_codes_without_factors(self, user_id: int) -> None:
        """Recovery codes stand in for a factor: none left, none kept."""
        if not self.factors_left(user_id):
            self.session.execute(delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user_id))

    def codes_for_first_factor(self, user_id: int) -> list[str]:
        """New recovery codes when the person has none left (their first factor, or they
        used them all), to be shown once; else none (theirs stay as they are)."""
        return [] if self._codes_left(user_id) else self._new_recovery_codes(user_id)

    def finish_enrolment(self, user_id: int) -> None:
        """Sessions good only for enrolling become whole: a factor is proven."""
        self.session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == user_id, AuthSession.mfa_pending.is_(True))
            .values(mfa_pending=False)
            .execution_options(synchronize_session=False)
        )

    # -- helpers ------------------------------------------------------------------------

    def _user(self, actor: Actor) -> User:
        user = self.session.get(User, actor.user_id) if actor.user_id is not None else None
        if user is None:
            raise Unauthorized("Sign in as a person to manage your own factors")
        return user

    def _factor(self, user_id: int) -> MfaFactor | None:
        return self.session.scalar(
            select(MfaFactor).where(MfaFactor.user_id == user_id, MfaFactor.kind == TOTP)
        )

    def _confirmed(self, user_id: int) -> MfaFactor:
        factor = self._factor(user_id)
        if factor is None or factor.confirmed_at is None:
            raise Conflict("No authenticator app is set up")
        return factor

    def _codes_left(self, user_id: int) -> int:
        return int(
            self.session.scalar(
                select(func.count())
                .select_from(MfaRecoveryCode)
                .where(MfaRecoveryCode.user_id == user_id, MfaRecoveryCode.used_at.is_(None))
            )
            or 0
        )

    def _secret(self, factor: MfaFactor) -> str:
        return str(unseal(self.settings.secret_key, factor.sealed_secret)["secret"])

    def _checked_step(self, actor: Actor, user: User, factor: MfaFactor, code: str) -> int:
        """The step of a right TOTP code (signed in: wrong ones are a 422, throttled)."""
        self.throttle.second_factor_check(user.id, actor.source_address or "")
        step = totp.matching_step(self._secret(factor), code, factor.last_step)
        if step is None:
            self.refuse_confirmation(actor, user, WRONG_CODE, method="code")
        return step

    def _use_step(self, factor: MfaFactor, step: int) -> bool:
        """Record ``step`` as used, if no later or equal one was (concurrent uses: one)."""
        used = self.session.execute(
            update(MfaFactor)
            .where(
                MfaFactor.id == factor.id,
                or_(MfaFactor.last_step.is_(None), MfaFactor.last_step < step),
            )
            .values(last_step=step, last_used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return used.rowcount == 1  # type: ignore[attr-defined]

    def _use_recovery_code(self, user_id: int, code: str) -> str | None:
        used = self.session.execute(
            update(MfaRecoveryCode)
            .where(
                MfaRecoveryCode.user_id == user_id,
                MfaRecoveryCode.code_hash == totp.recovery_digest(code),
                MfaRecoveryCode.used_at.is_(None),
            )
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return "recovery_code" if used.rowcount == 1 else None  # type: ignore[attr-defined]

    def _use_code(self, user_id: int, code: str) -> tuple[str | None, str]:
        """Use ``code`` (TOTP or recovery) for the person: the method, or None and why.
        A recovery code stands in for an app or a passkey alike."""
        factor = self._factor(user_id)
        if factor is None or factor.confirmed_at is None:
            if not self.passkey_count(user_id):
                return None, "no factor"
            method = None if totp.is_totp_code(code) else self._use_recovery_code(user_id, code)
            return (method, "") if method else (None, "wrong or used recovery code")
        if totp.is_totp_code(code):
            secret = self._secret(factor)
            step = totp.matching_step(secret, code, None)
            if step is None:
                return None, "wrong code"
            if not self._use_step(factor, step):
                return None, "code used already"
            return TOTP, ""
        method = self._use_recovery_code(user_id, code)
        return (method, "") if method else (None, "wrong or used recovery code")

    def _new_recovery_codes(self, user_id: int) -> list[str]:
        self.session.execute(delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user_id))
        codes = totp.new_recovery_codes()
        self.session.add_all(
            MfaRecoveryCode(user_id=user_id, code_hash=totp.recovery_digest(code)) for code in codes
        )
        return codes

    def _remove_factors(self, user_id: int) -> None:
        self.session.execute(delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user_id))
        self.session.execute(delete(MfaFactor).where(MfaFactor.user_id == user_id))
        self.session.execute(delete(PasskeyCredential).where(PasskeyCredential.user_id == user_id))
        self.session.execute(delete(PasskeyChallenge).where(PasskeyChallenge.user_id == user_id))

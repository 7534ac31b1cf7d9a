"""Single sign-on: an OpenID Connect provider vouches for a person; who that is here.

Never provisions: an identity signs in only to an existing active account, found by its
linked (issuer, subject) or, the first time, by the provider's *verified* email, after
which the subject is linked. An invitation can be accepted the same way. Instead of
tokens, the browser round trip ends with a one-time code (stored hashed, short-lived)
that the client exchanges for the same session tokens a password sign-in gives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.audit.refusals import with_reason
from gateway.db.models import (
    SsoConnection,
    SsoLink,
    TokenPurpose,
    User,
    UserStatus,
    UserToken,
    utcnow,
)
from gateway.emails import normalise_email
from gateway.engine.engine import SubjectChanged
from gateway.errors import SsoRefused, Unauthorized
from gateway.identity.security import new_token, token_digest
from gateway.services.auth import AuthService, IssuedToken, claim_user_token, holds_everywhere
from gateway.services.base import Actor, AuditTarget, ChangeSet, UnitOfWork, self_actor
from gateway.services.grants import add_grant
from gateway.services.invitations import InvitationService
from gateway.services.sso_domains import email_domain
from gateway.services.users import account_by_email

SSO_CODE_TTL_SECONDS = 60


@dataclass(frozen=True)
class ExternalIdentity:
    """What the provider's validated ID token says about the person."""

    issuer: str
    subject: str
    email: str
    email_verified: bool
    name: str = ""
    # The provider's session (the ID token's ``sid``, OpenID Connect Back-Channel
    # Logout): its logout token may name it. Empty when the provider sent none.
    sid: str = ""


@dataclass(frozen=True)
class SsoCode:
    code: str
    expires_in: int
    user_id: int


class SsoService:
    def __init__(
        self,
        session: Session,
        auth: AuthService,
        invitations: InvitationService,
        uow: UnitOfWork,
    ) -> None:
        self.session = session
        self.auth = auth
        self.invitations = invitations
        self.uow = uow
        # Whether a workspace holds a domain verified now (wired by Services to
        # SsoDomainService.verified_by; nobody's, until then), and the installation's
        # company domains (just-in-time accounts, like invited ones, only there).
        self.verified_by: Callable[[str, str | None], bool] = lambda workspace, domain: False
        self.allowed_domains: Callable[[], Sequence[str]] = list

    def sign_in_with_connection(
        self,
        connection: SsoConnection,
        identity: ExternalIdentity,
        client: str = "",
        request_id: str | None = None,
    ) -> SsoCode:
        """A one-time code for the person a workspace's connection vouches for. The
        connection is believed only about addresses of domains its workspace holds
        verified, now: for a linked subject, the account's address; otherwise the
        address the provider verified. An unknown address is provisioned just in time
        when the connection says so (its role, in its workspace), or refused. The
        installation's operators are never signed in by a workspace's connection.
        Every refusal is audited and changes nothing."""
        workspace = connection.workspace_slug

        def refuse(user: User | None, reason: str, message: str) -> SsoRefused:
            reason = f"{reason} (connection {connection.id})"
            self._refuse(identity, user, client, reason, request_id)
            return SsoRefused(message)

        if identity.issuer.rstrip("/") != connection.issuer.rstrip("/"):
            raise refuse(
                None, "another issuer", "The sign-on answer comes from another identity provider"
            )
        link = self.session.scalar(
            select(SsoLink).where(
                SsoLink.connection_id == connection.id, SsoLink.subject == identity.subject
            )
        )
        user = self.session.get(User, link.user_id) if link else None
        if user is not None:
            if not self.verified_by(workspace, email_domain(user.email)):
                raise refuse(
                    user,
                    "address outside the workspace's verified domains",
                    f"This single sign-on is not the one for {user.email}: sign in from "
                    "the sign-in page with your email address",
                )
        else:
            if not identity.email or not identity.email_verified:
                raise refuse(
                    None,
                    "the provider did not verify an email",
                    "The identity provider did not vouch for your email address, so it "
                    "cannot be matched to an account here",
                )
            email = normalise_email(identity.email)
            if not self.verified_by(workspace, email_domain(email)):
                # Another workspace's domain, or none's: this provider is not the one
                # that speaks for it.
                raise refuse(
                    None,
                    "address outside the workspace's verified domains",
                    f"This single sign-on is not the one for {identity.email}: sign in "
                    "from the sign-in page with your email address",
                )
            user = account_by_email(self.session, email)
            if user is None:
                if not connection.jit_role:
                    pending = self._invited(email)
                    raise refuse(
                        None,
                        "account pending" if pending else "no account",
                        "Your invitation is not accepted yet; open the link in your "
                        "invitation email"
                        if pending
                        else f"There is no account for {identity.email} here; ask an "
                        "administrator to invite you",
                    )
                allowed = list(self.allowed_domains())
                if allowed and email.rpartition("@")[2] not in allowed:
                    raise refuse(
                        None,
                        "not a company address",
                        f"Accounts may be created only for "
                        f"{', '.join('@' + d for d in allowed)}; ask an administrator",
                    )
                user = self._provision(connection, identity, email, client, request_id)
            elif self.session.scalar(
                select(SsoLink.id).where(
                    SsoLink.connection_id == connection.id, SsoLink.user_id == user.id
                )
            ):
                raise refuse(
                    user,
                    "linked to another identity",
                    "This account is linked to another identity of this single sign-on; "
                    "sign in with that one or ask an administrator",
                )
        if holds_everywhere(self.session, user):
            raise refuse(
                user,
                "an installation operator",
                "The installation's operators sign in with their password, not a "
                "workspace's single sign-on",
            )
        if user.status != UserStatus.ACTIVE:
            raise refuse(
                user,
                f"account {user.status}",
                "Your invitation is not accepted yet; open the link in your invitation email"
                if user.status == UserStatus.PENDING
                else "This account is deactivated; ask an administrator",
            )
        if link is None:
            link = SsoLink(connection_id=connection.id, subject=identity.subject, user_id=user.id)
            self.session.add(link)
        link.last_sign_in_at = utcnow()
        try:
            return self.issue_code(
                user, "auth.sso_login", client, identity, request_id, connection=connection
            )
        except IntegrityError:
            # The same first sign-on finishing twice at once: the other linked it.
            self.session.rollback()
            raise refuse(
                user, "concurrent first sign-on", "The sign-in is in progress elsewhere; try again"
            ) from None

    def _provision(
        self,
        connection: SsoConnection,
        identity: ExternalIdentity,
        email: str,
        client: str,
        request_id: str | None,
    ) -> User:
        """Just in time: an active account without a password, the connection's role in
        its workspace and the link, in one change (audited as a provisioning)."""
        role = connection.jit_role
        assert role is not None
        actor = Actor(
            None,
            f"single sign-on {connection.name} ({connection.workspace_slug})",
            request_id=request_id,
            source_address=client or None,
            client_id=f"sso:{connection.id}",
        )
        with self.uow.change(actor) as changes:
            user = User(
                email=email,
                name=identity.name or email.partition("@")[0],
                status=UserStatus.ACTIVE,
            )
            self.session.add(user)
            self.session.flush()
            changes.engine(SubjectChanged(user.id, user.email, active=True))
            add_grant(changes, user, connection.workspace_slug, role, None)
            changes.audit(
                "sso.provisioned",
                AuditTarget.USER,
                user.id,
                user.name,
                connection.workspace_slug,
                after={
                    "email": email,
                    "roles": {connection.workspace_slug: [role]},
                    "connection": connection.id,
                    "issuer": identity.issuer,
                    "subject": identity.subject,
                },
            )
        return user

    def sign_in(
        self, identity: ExternalIdentity, client: str = "", request_id: str | None = None
    ) -> SsoCode:
        """A one-time code for the active account ``identity`` belongs to; SsoRefused
        (audited) when there is none or it may not sign in."""
        user = self.session.scalar(
            select(User).where(
                User.oidc_issuer == identity.issuer, User.oidc_subject == identity.subject
            )
        )
        if user is None:
            if not identity.email or not identity.email_verified:
                self._refuse(
                    identity, None, client, "the provider did not verify an email", request_id
                )
                raise SsoRefused(
                    "The identity provider did not vouch for your email address, so it "
                    "cannot be matched to an account here"
                )
            email = normalise_email(identity.email)
            user = account_by_email(self.session, email)
            if user is None and self._invited(email):
                # The provider vouched for this address: telling its owner that an
                # invitation waits for them tells nobody else anything.
                self._refuse(identity, None, client, "account pending", request_id)
                raise SsoRefused(
                    "Your invitation is not accepted yet; open the link in your invitation email"
                )
            if user is None:
                self._refuse(identity, None, client, "no account", request_id)
                raise SsoRefused(
                    f"There is no account for {identity.email} here; ask an administrator "
                    "to invite you",
                    email=identity.email,
                )
            linked = (user.oidc_issuer, user.oidc_subject)
            if user.oidc_subject is not None and linked != (identity.issuer, identity.subject):
                # Linked to another identity (of this or another provider): the email
                # alone must not take the account over. (Linked to this very identity
                # since the lookup above: a concurrent first sign-on; go on.)
                self._refuse(identity, user, client, "linked to another identity", request_id)
                raise SsoRefused(
                    "This account is linked to another single sign-on identity; sign in "
                    "with that one or ask an administrator"
                )
        if user.status != UserStatus.ACTIVE:
            self._refuse(identity, user, client, f"account {user.status}", request_id)
            reason = (
                "Your invitation is not accepted yet; open the link in your invitation email"
                if user.status == UserStatus.PENDING
                else "This account is deactivated; ask an administrator"
            )
            raise SsoRefused(reason)
        if user.oidc_subject is None:
            user.oidc_issuer, user.oidc_subject = identity.issuer, identity.subject
        return self.issue_code(user, "auth.sso_login", client, identity, request_id)

    def accept_invitation(
        self,
        token: str,
        identity: ExternalIdentity,
        client: str = "",
        request_id: str | None = None,
    ) -> SsoCode:
        """Accept the invitation of ``token`` as the identity's verified email, then sign
        the person in (a one-time code)."""
        if not identity.email or not identity.email_verified:
            self._refuse(identity, None, client, "the provider did not verify an email", request_id)
            raise SsoRefused(
                "The identity provider did not vouch for your email address, so it cannot "
                "accept an invitation"
            )
        try:
            user = self.invitations.accept_with_identity(
                token,
                identity.email,
                identity.issuer,
                identity.subject,
                identity.name or None,
                client=client,
                request_id=request_id,
            )
        except SsoRefused as exc:
            self._refuse(identity, None, client, f"invitation: {exc.detail}", request_id)
            raise
        return self.issue_code(user, "auth.sso_login", client, identity, request_id)

    def issue_code(
        self,
        user: User,
        action: str,
        client: str,
        identity: ExternalIdentity,
        request_id: str | None = None,
        connection: SsoConnection | None = None,
    ) -> SsoCode:
        """A one-time code for ``user``; through a workspace's ``connection``, the code
        carries it and the provider's session (``sid``) on to the session it opens."""
        code = new_token()
        self.session.add(
            UserToken(
                token_hash=token_digest(code),
                purpose=TokenPurpose.SSO_CODE,
                user_id=user.id,
                expires_at=utcnow() + timedelta(seconds=SSO_CODE_TTL_SECONDS),
                sso_connection_id=connection.id if connection else None,
                sso_sid=(identity.sid[:255] or None) if connection else None,
            )
        )
        self._audit(self_actor(user, client, request_id), action, user, identity)
        self.session.commit()
        return SsoCode(code, SSO_CODE_TTL_SECONDS, user.id)

    def exchange(self, code: str, client: str = "", request_id: str | None = None) -> IssuedToken:
        """Session tokens for a one-time code, once, while it is fresh and the account
        still active."""
        row = self.session.scalar(
            select(UserToken).where(
                UserToken.token_hash == token_digest(code),
                UserToken.purpose == TokenPurpose.SSO_CODE,
            )
        )
        user = self.session.get(User, row.user_id) if row else None
        refused = _code_refusal(row, user)
        # Not audited here: anyone can send a made-up code, so the HTTP layer counts
        # refusals and audits them by sample (gateway.audit.refusals). The answer does not say
        # which it was (whether a code exists is not the caller's to learn).
        if refused is not None or row is None or user is None:
            raise with_reason(
                Unauthorized("The sign-in code is not valid, used already or expired"),
                refused or "unknown-code",
            )
        if not claim_user_token(self.session, row.id):
            self.session.rollback()
            raise with_reason(Unauthorized("The sign-in code was used already"), "used-code")
        return self.auth.start_session(
            user,
            "auth.login_sso",
            client,
            request_id,
            sso_connection_id=row.sso_connection_id,
            sso_sid=row.sso_sid,
        )

    def _invited(self, email: str) -> bool:
        """Whether a placeholder of an invitation waits under ``email``."""
        pending = select(User.id).where(User.email == email, User.status == UserStatus.PENDING)
        return self.session.scalar(pending.limit(1)) is not None

    def _refuse(
        self,
        identity: ExternalIdentity,
        user: User | None,
        client: str,
        reason: str,
        request_id: str | None = None,
    ) -> None:
        actor = self_actor(user, client, request_id)
        self._audit(actor, "auth.sso_refused", user, identity, reason)
        self.session.commit()

    def _audit(
        self,
        actor: Actor,
        action: str,
        user: User | None,
        identity: ExternalIdentity,
        reason: str | None = None,
    ) -> None:
        changes = ChangeSet(self.session, actor)
        after = {
            "email": identity.email,
            "issuer": identity.issuer,
            "subject": identity.subject,
            "source_address": actor.source_address,
        }
        if reason:
            after["reason"] = reason
        changes.audit(
            action,
            AuditTarget.USER if user else AuditTarget.LOGIN,
            target_id=user.id if user else None,
            target_name=user.name if user else identity.email,
            after=after,
        )
        self.session.add_all(changes.events)


def _code_refusal(row: UserToken | None, user: User | None) -> str | None:
    """Why a one-time sign-on code is refused, as a category; None if it is not."""
    if row is None:
        return "unknown-code"
    if row.used_at is not None:
        return "used-code"
    if row.expires_at <= utcnow():
        return "expired-code"
    if user is None or user.status != UserStatus.ACTIVE:
        return "inactive-account"
    return None

"""Users service: registration, tokens, activation, password resets, admin checks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest
from sqlalchemy import select, update

from flowserv_async import DB, LocalAPIFactory
from flowserv_async._util import utc_now
from flowserv_async.config import DEFAULT_USER
from flowserv_async.db.models import APIKey, PasswordRequest, User
from flowserv_async.errors import (
    ConstraintViolationError,
    DuplicateUserError,
    UnauthenticatedAccessError,
    UnauthorizedAccessError,
    UnknownRequestError,
    UnknownUserError,
)


async def register(factory: LocalAPIFactory, name: str, pw: str = "pw", **kw: Any) -> str:
    async with factory() as api:
        return str((await api.users().register_user(name, pw, **kw))["id"])


async def test_register_returns_user_and_stores_a_slow_hash(
    factory: LocalAPIFactory, database: DB
) -> None:
    async with factory() as api:
        user = await api.users().register_user("  alice  ", "secret")
    assert set(user) == {"id", "username"}
    assert user["username"] == "alice"
    assert len(user["id"]) == 32
    async with database.session() as s:
        row = await s.get(User, user["id"])
    assert row is not None and row.active and not row.is_admin
    assert row.secret.startswith("scrypt$") and "secret" not in row.secret


@pytest.mark.parametrize(
    ("username", "password"),
    [("", "pw"), ("   ", "pw"), ("x" * 513, "pw"), (None, "pw"), ("bob", ""), ("bob", "  ")],
)
async def test_register_rejects_bad_input_and_writes_nothing(
    factory: LocalAPIFactory, count_rows: Callable[..., Any], username: Any, password: str
) -> None:
    before = await count_rows(User)
    with pytest.raises(ConstraintViolationError):
        async with factory() as api:
            await api.users().register_user(username, password)
    assert await count_rows(User) == before


async def test_register_accepts_the_longest_name(factory: LocalAPIFactory) -> None:
    async with factory() as api:
        user = await api.users().register_user("x" * 512, "pw")
    assert user["username"] == "x" * 512


async def test_register_duplicate_name(
    factory: LocalAPIFactory, count_rows: Callable[..., Any]
) -> None:
    await register(factory, "alice")
    with pytest.raises(DuplicateUserError, match="alice"):
        async with factory() as api:
            await api.users().register_user(" alice", "other")
    assert await count_rows(User, User.name == "alice") == 1


async def test_concurrent_duplicate_registration_keeps_one_row(
    factory: LocalAPIFactory, count_rows: Callable[..., Any]
) -> None:
    errors: list[BaseException] = []

    async def attempt() -> None:
        try:
            await register(factory, "carol")
        except DuplicateUserError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(attempt)
    assert len(errors) == 4
    assert await count_rows(User, User.name == "carol") == 1


async def test_verified_registration_needs_activation(factory: LocalAPIFactory) -> None:
    user_id = await register(factory, "dave", verify=True)
    with pytest.raises(UnknownUserError):
        async with factory() as api:
            await api.users().login_user("dave", "pw")
    async with factory() as api:
        assert (await api.users().activate_user(user_id))["username"] == "dave"
    async with factory() as api:
        assert "token" in await api.users().login_user("dave", "pw")


async def test_activate_unknown_user(factory: LocalAPIFactory) -> None:
    with pytest.raises(UnknownUserError, match="nobody"):
        async with factory() as api:
            await api.users().activate_user("nobody")


@pytest.mark.parametrize(("username", "password"), [("alice", "wrong"), ("bob", "pw")])
async def test_login_refuses_wrong_password_and_unknown_name_alike(
    factory: LocalAPIFactory, username: str, password: str
) -> None:
    await register(factory, "alice")
    with pytest.raises(UnknownUserError):
        async with factory() as api:
            await api.users().login_user(username, password)


async def test_login_reuses_unexpired_token_and_extends_it(
    factory: LocalAPIFactory, database: DB
) -> None:
    user_id = await register(factory, "alice")
    async with factory() as api:
        first = await api.users().login_user("alice", "pw")
    async with database.session() as s:
        expires = (await s.get(APIKey, user_id)).expires_at  # type: ignore[union-attr]
    await anyio.sleep(0.01)
    async with factory() as api:
        second = await api.users().login_user("alice", "pw")
    assert second["token"] == first["token"]
    assert len(first["token"]) >= 32
    async with database.session() as s:
        assert (await s.get(APIKey, user_id)).expires_at > expires  # type: ignore[union-attr]


async def test_expired_token_is_refused_and_replaced(
    make_factory: Callable[..., LocalAPIFactory],
) -> None:
    factory = make_factory({"FLOWSERV_AUTH_TTL": "1"})
    await register(factory, "alice")
    async with factory() as api:
        token = (await api.users().login_user("alice", "pw"))["token"]
    async with factory() as api:
        assert (await api.users().whoami_user(token))["username"] == "alice"
    await anyio.sleep(1.1)
    with pytest.raises(UnauthenticatedAccessError):
        async with factory() as api:
            await api.users().whoami_user(token)
    async with factory(access_token=token) as api:
        assert api.user_id is None
    async with factory() as api:
        assert (await api.users().login_user("alice", "pw"))["token"] != token


async def test_logout_invalidates_token(factory: LocalAPIFactory) -> None:
    await register(factory, "alice")
    async with factory() as api:
        token = (await api.users().login_user("alice", "pw"))["token"]
    async with factory() as api:
        assert (await api.users().logout_user(token))["username"] == "alice"
    for call in ("whoami_user", "logout_user"):
        with pytest.raises(UnauthenticatedAccessError):
            async with factory() as api:
                await getattr(api.users(), call)(token)


@pytest.mark.parametrize("token", ["", "short", "0" * 64])
async def test_unknown_tokens_are_unauthenticated(factory: LocalAPIFactory, token: str) -> None:
    with pytest.raises(UnauthenticatedAccessError):
        async with factory() as api:
            await api.users().whoami_user(token)


async def test_token_with_known_selector_but_wrong_secret(factory: LocalAPIFactory) -> None:
    await register(factory, "alice")
    async with factory() as api:
        token = (await api.users().login_user("alice", "pw"))["token"]
    forged = token[:16] + ("0" if token[16] != "0" else "1") + token[17:]
    with pytest.raises(UnauthenticatedAccessError):
        async with factory() as api:
            await api.users().whoami_user(forged)


async def test_list_users_filters_orders_and_pages(factory: LocalAPIFactory) -> None:
    for name in ("bob", "alice", "albert", "al%x"):
        await register(factory, name)
    await register(factory, "alina", verify=True)
    async with factory() as api:
        users = (await api.users().list_users())["users"]
        assert [u["username"] for u in users] == ["al%x", "albert", "alice", "bob"]
        assert DEFAULT_USER not in {u["id"] for u in users}
        prefixed = (await api.users().list_users(query="ali"))["users"]
        assert [u["username"] for u in prefixed] == ["alice"]
        literal = (await api.users().list_users(query="al%"))["users"]
        assert [u["username"] for u in literal] == ["al%x"]
        page = (await api.users().list_users(limit=2, offset=1))["users"]
        assert [u["username"] for u in page] == ["albert", "alice"]


async def test_password_reset_flow(
    factory: LocalAPIFactory, count_rows: Callable[..., Any]
) -> None:
    await register(factory, "alice", "old")
    async with factory() as api:
        token = (await api.users().login_user("alice", "old"))["token"]
        first = (await api.users().request_password_reset("alice"))["requestId"]
    async with factory() as api:
        second = (await api.users().request_password_reset("alice"))["requestId"]
    assert first != second
    assert await count_rows(PasswordRequest) == 1
    with pytest.raises(UnknownRequestError):
        async with factory() as api:
            await api.users().reset_password(first, "new")
    async with factory() as api:
        assert (await api.users().reset_password(second, "new"))["username"] == "alice"
    assert await count_rows(PasswordRequest) == 0
    with pytest.raises(UnauthenticatedAccessError):
        async with factory() as api:
            await api.users().whoami_user(token)
    with pytest.raises(UnknownUserError):
        async with factory() as api:
            await api.users().login_user("alice", "old")
    async with factory() as api:
        await api.users().login_user("alice", "new")
    with pytest.raises(UnknownRequestError):
        async with factory() as api:
            await api.users().reset_password(second, "again")


async def test_password_reset_for_unknown_or_inactive_user_records_nothing(
    factory: LocalAPIFactory, count_rows: Callable[..., Any]
) -> None:
    await register(factory, "eve", verify=True)
    async with factory() as api:
        unknown = await api.users().request_password_reset("nobody")
        inactive = await api.users().request_password_reset("eve")
    assert set(unknown) == {"requestId"} and len(unknown["requestId"]) == 32
    assert inactive["requestId"] != unknown["requestId"]
    assert await count_rows(PasswordRequest) == 0


async def test_expired_reset_request_and_blank_password(
    factory: LocalAPIFactory, database: DB
) -> None:
    await register(factory, "alice")
    async with factory() as api:
        request_id = (await api.users().request_password_reset("alice"))["requestId"]
    with pytest.raises(ConstraintViolationError):
        async with factory() as api:
            await api.users().reset_password(request_id, " ")
    async with database.session() as s, s.begin():
        await s.execute(update(PasswordRequest).values(expires_at=utc_now() - timedelta(seconds=1)))
    with pytest.raises(UnknownRequestError, match=request_id):
        async with factory() as api:
            await api.users().reset_password(request_id, "new")
    async with factory() as api:
        await api.users().login_user("alice", "pw")


async def test_admin_operations_need_an_admin_when_token_authenticated(
    factory: LocalAPIFactory, database: DB
) -> None:
    user_id = await register(factory, "alice")
    other = await register(factory, "bob", verify=True)
    async with factory() as api:
        token = (await api.users().login_user("alice", "pw"))["token"]
    for call, args in (("list_users", ()), ("activate_user", (other,))):
        with pytest.raises(UnauthorizedAccessError):
            async with factory(access_token=token) as api:
                await getattr(api.users(), call)(*args)
    with pytest.raises(UnauthenticatedAccessError):
        async with factory(access_token="0" * 64) as api:
            await api.users().list_users()
    async with database.session() as s, s.begin():
        await s.execute(update(User).where(User.user_id == user_id).values(is_admin=True))
    async with factory(access_token=token) as api:
        assert (await api.users().activate_user(other))["id"] == other
    async with factory(user_id=user_id) as api:  # local use: no token
        assert len((await api.users().list_users())["users"]) == 2


async def test_admin_operations_need_an_admin_when_the_user_is_given_without_token(
    make_factory: Callable[..., LocalAPIFactory],
) -> None:
    # SPEC 2: only a local session with neither a token nor a user is an administrator.
    factory = make_factory()
    alice = await register(factory, "alice")
    bob = await register(factory, "bob", verify=True)
    for session in (factory(user_id=alice), make_factory(user_id=alice)()):
        with pytest.raises(UnauthorizedAccessError, match=alice):
            async with session as api:
                await api.users().activate_user(bob)
    with pytest.raises(UnauthorizedAccessError, match=alice):
        async with factory(user_id=alice) as api:
            await api.users().list_users()
    async with factory() as api:  # local use: neither token nor user
        assert [u["username"] for u in (await api.users().list_users())["users"]] == ["alice"]


async def test_admin_operations_allowed_under_open_access(
    make_factory: Callable[..., LocalAPIFactory],
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    await register(factory, "alice")
    async with factory() as api:
        token = (await api.users().login_user("alice", "pw"))["token"]
    async with factory(access_token=token) as api:
        assert [u["username"] for u in (await api.users().list_users())["users"]] == ["alice"]


async def test_user_resolution_under_the_default_policy(
    make_factory: Callable[..., LocalAPIFactory],
) -> None:
    factory = make_factory()
    alice = await register(factory, "alice")
    bob = await register(factory, "bob")
    async with factory() as api:
        token = (await api.users().login_user("alice", "pw"))["token"]
    async with factory() as api:
        assert api.user_id is None
        assert "username" not in api.server().to_dict()
    async with factory(access_token=token) as api:
        assert api.user_id == alice
        assert api.server().to_dict()["username"] == "alice"
    async with factory(user_id=bob, access_token=token) as api:
        assert api.user_id == bob
    async with factory(access_token="not-a-token") as api:
        assert api.user_id is None
    with_user = make_factory(user_id=bob)
    async with with_user(access_token=token) as api:
        assert api.user_id == bob
    async with with_user(user_id=alice) as api:
        assert api.user_id == alice
    from_env = make_factory({"FLOWSERV_ACCESS_TOKEN": token})
    async with from_env() as api:
        assert api.user_id == alice


async def test_user_resolution_under_open_access(
    make_factory: Callable[..., LocalAPIFactory],
) -> None:
    factory = make_factory({"FLOWSERV_AUTH": "open"})
    alice = await register(factory, "alice")
    async with factory() as api:
        assert api.user_id == DEFAULT_USER
        token = (await api.users().login_user("alice", "pw"))["token"]
    async with factory(access_token=token) as api:
        assert api.user_id == alice
    async with factory(access_token="bad") as api:
        assert api.user_id == DEFAULT_USER


async def test_factory_login_and_logout_keep_the_token(
    make_factory: Callable[..., LocalAPIFactory],
) -> None:
    factory = make_factory()
    alice = await register(factory, "alice")
    await factory.logout()  # no token yet: nothing happens
    user = await factory.login("alice", "pw")
    assert factory.env["FLOWSERV_ACCESS_TOKEN"] == user["token"]
    async with factory() as api:
        assert api.user_id == alice
    await factory.logout()
    assert "FLOWSERV_ACCESS_TOKEN" not in factory.env
    async with factory() as api:
        assert api.user_id is None
        with pytest.raises(UnauthenticatedAccessError):
            await api.users().whoami_user(user["token"])


async def test_block_that_raises_rolls_back(
    factory: LocalAPIFactory, count_rows: Callable[..., Any]
) -> None:
    before = await count_rows(User)
    with pytest.raises(RuntimeError, match="boom"):
        async with factory() as api:
            await api.users().register_user("alice", "pw")
            raise RuntimeError("boom")
    assert await count_rows(User) == before


async def test_cancelled_block_rolls_back(
    factory: LocalAPIFactory, count_rows: Callable[..., Any]
) -> None:
    before = await count_rows(User)
    with anyio.move_on_after(10) as scope:
        async with factory() as api:
            await api.users().register_user("alice", "pw")
            scope.cancel()
            await anyio.sleep(1)
    assert scope.cancelled_caught
    assert await count_rows(User) == before


async def test_failed_call_inside_block_rolls_back_earlier_writes(
    factory: LocalAPIFactory, count_rows: Callable[..., Any]
) -> None:
    await register(factory, "alice")
    with pytest.raises(DuplicateUserError):
        async with factory() as api:
            await api.users().register_user("bob", "pw")
            await api.users().register_user("alice", "pw")
    assert await count_rows(User, User.name == "bob") == 0


async def test_concurrent_logins_of_one_user_share_one_token(factory: LocalAPIFactory) -> None:
    await register(factory, "alice")
    tokens: list[str] = []

    async def login() -> None:
        async with factory() as api:
            tokens.append((await api.users().login_user("alice", "pw"))["token"])

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(login)
    assert len(tokens) == 20
    assert len(set(tokens)) == 1


async def test_200_concurrent_calls_in_own_sessions(factory: LocalAPIFactory, database: DB) -> None:
    names = [f"user{i:03d}" for i in range(40)]
    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(register, factory, name)
    tokens: dict[str, str] = {}
    errors: list[BaseException] = []

    async def call(kind: str, i: int) -> None:
        try:
            name = names[i % len(names)]
            async with factory() as api:
                if kind == "register":
                    await api.users().register_user(f"new{i:03d}", "pw")
                elif kind == "login":
                    tokens[name] = (await api.users().login_user(name, "pw"))["token"]
                else:
                    await api.users().list_users(query="user")
        except BaseException as exc:
            errors.append(exc)
            raise

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(call, ("register", "login", "whoami", "whoami", "whoami")[i % 5], i)
    assert errors == []

    async def whoami(name: str, token: str) -> None:
        async with factory() as api:
            assert (await api.users().whoami_user(token))["username"] == name

    async with anyio.create_task_group() as tg:
        for name, token in tokens.items():
            tg.start_soon(whoami, name, token)
    async with database.session() as s:
        stored = set((await s.scalars(select(User.name))).all())
        keys = (await s.scalars(select(APIKey.user_id))).all()
    assert {f"new{i:03d}" for i in range(0, 200, 5)} <= stored
    assert len(keys) == len(set(keys)) == len(tokens)

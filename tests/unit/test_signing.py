"""Signing without servers: what a signature covers and how a folder is compared with it, the
verdict document (its values are deployment_info.json's), the signing settings and signers'
configuration (keyless Sigstore's missing-token error included: Sigstore itself cannot be reached
here), a real key signature over precomputed digests, and the gate's order with a signer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from deploygate.adapters.model_signer import KeySigner, KeyVerifier, SigstoreSigner, sign_folder
from deploygate.bootstrap import build_signer, build_verifier, pem_or_path
from deploygate.core import records
from deploygate.core.errors import ConfigError
from deploygate.core.model import RunContext
from deploygate.core.render.result_documents import deployment_info, tidy
from deploygate.core.render.verdict import parse_verdict, verdict_document, verdict_lines, verdict_text
from deploygate.core.settings import build_config
from deploygate.core.signing import (
    SIGNATURE_FILE,
    VERDICT_FILE,
    FileProblem,
    compare,
    folder_digests,
    is_unsigned,
)
from deploygate.service.gate import run
from deploygate.service.ship import HubShipper
from deploygate.service.verify import verify_folder, verify_revision
from deploygate.shells.cli import main
from tests.fakes import FakeCards, FakeSigner, FakeVerifier, TickingClock
from tests.keys import ec_pem
from tests.unit.test_gate_ordering import GOOD, NAME, REPO, WORSE, World, world  # noqa: F401

# --- what a signature covers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "unsigned"),
    [
        ("model.sig", True),
        (".gitattributes", True),
        (".cache/huggingface/download/x.metadata", True),
        (".git/HEAD", True),
        ("config.json", False),
        ("sub/model.sig", False),  # only the top-level signature is the signature
        ("deploygate-verdict.json", False),
        ("deploygate.json", False),
    ],
)
def test_unsigned_paths(path: str, unsigned: bool) -> None:
    assert is_unsigned(path) is unsigned


@pytest.mark.parametrize(
    ("signed", "found", "expected"),
    [
        ({"a": "1", "b": "2"}, {"a": "1", "b": "2"}, []),
        ({"a": "1", "b": "2"}, {"a": "1", "b": "3"}, [FileProblem("b", "changed")]),
        ({"a": "1"}, {"a": "1", "c": "9"}, [FileProblem("c", "added")]),
        ({"a": "1", "b": "2"}, {"a": "1"}, [FileProblem("b", "missing")]),
        (
            {"a": "1", "b": "2"},
            {"b": "0", "z": "1"},
            [FileProblem("a", "missing"), FileProblem("b", "changed"), FileProblem("z", "added")],
        ),
    ],
)
def test_compare_names_every_file(
    signed: dict[str, str], found: dict[str, str], expected: list[FileProblem]
) -> None:
    assert compare(signed, found) == expected


def test_folder_digests_skip_what_is_never_signed(tmp_path: Path) -> None:
    (tmp_path / "w.safetensors").write_bytes(b"weights")
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "t.json").write_text("{}")
    (tmp_path / SIGNATURE_FILE).write_text("sig")
    (tmp_path / ".gitattributes").write_text("*.safetensors filter=lfs")
    (tmp_path / ".cache" / "huggingface").mkdir(parents=True)
    (tmp_path / ".cache" / "huggingface" / "x").write_text("meta")
    digests = folder_digests(tmp_path)
    assert list(digests) == ["tok/t.json", "w.safetensors"]
    assert digests["w.safetensors"] == hashlib.sha256(b"weights").hexdigest()


# --- keys and signers ----------------------------------------------------------------------------


def test_a_key_signature_over_precomputed_digests_verifies_the_folder(tmp_path: Path) -> None:
    """The streaming push's interface: sign {path: sha256} without the folder, verify the folder."""
    files = {"model-00001-of-00002.safetensors": b"a" * 1000, "config.json": b"{}", "tok/t.json": b"[]"}
    digests = {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
    private, public = ec_pem()
    signature = KeySigner(private).sign_digests(digests, model_name="acme/model@v1")
    folder = tmp_path / "model"
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    (folder / SIGNATURE_FILE).write_bytes(signature)
    result = verify_folder(folder, KeyVerifier(public))
    assert result.verified and result.files == 3, result.problems
    # the same folder signed by hashing it gives a signature over the same digests
    assert KeyVerifier(public).signed_digests(sign_folder(folder, KeySigner(private))) == digests
    # model_signing's own verifier accepts it
    import model_signing

    key = tmp_path / "key.pub"
    key.write_bytes(public)
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key).verify(
        folder, folder / SIGNATURE_FILE
    )
    # another key does not verify it
    other = verify_folder(folder, KeyVerifier(ec_pem()[1]))
    assert not other.verified and "model.sig does not verify" in other.problems[0]


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP521R1()])
def test_the_larger_curves_sign_too(curve: ec.EllipticCurve) -> None:
    private, public = ec_pem(curve)
    signature = KeySigner(private).sign_digests({"a": "00" * 32}, model_name="m")
    assert KeyVerifier(public).signed_digests(signature) == {"a": "00" * 32}


def test_unusable_keys_are_one_line_without_the_key() -> None:
    with pytest.raises(ConfigError) as not_pem:
        KeySigner(b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0c2VjcmV0\n-----END PRIVATE KEY-----\n").preflight()
    assert "signing-key: not a usable private key" in str(not_pem.value)
    assert "c2VjcmV0" not in str(not_pem.value) and "\n" not in str(not_pem.value)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ConfigError, match="not supported by model-signing"):
        KeySigner(rsa_key).preflight()
    with pytest.raises(ConfigError, match="public-key: not a PEM public key"):
        KeyVerifier(b"nope")


def test_a_key_is_pem_text_or_a_path(tmp_path: Path) -> None:
    private, _ = ec_pem()
    path = tmp_path / "k.pem"
    path.write_bytes(private)
    assert pem_or_path(str(path), "signing-key") == private
    assert pem_or_path(private.decode().strip(), "signing-key") == private
    with pytest.raises(
        ConfigError, match=r"signing-key: '/no/such/key\.pem' is neither PEM text nor a readable"
    ):
        pem_or_path("/no/such/key.pem", "signing-key")


def test_keyless_without_an_oidc_token_is_one_clear_line() -> None:
    """Sigstore's servers cannot be reached here: what is tested is the configuration and the error."""
    cfg = build_config({"signing": "sigstore"})
    signer = build_signer(cfg, {})
    assert isinstance(signer, SigstoreSigner) and signer.method == "sigstore"
    with pytest.raises(ConfigError) as raised:
        signer.preflight()
    message = str(raised.value)
    assert "ACTIONS_ID_TOKEN_REQUEST_URL is not set" in message and "id-token: write" in message
    assert "\n" not in message
    # GitHub Actions with id-token: write offers the token's URL and request token
    granted = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.example/",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t",
    }
    build_signer(cfg, granted).preflight()  # type: ignore[union-attr]
    build_signer(cfg, {"SIGSTORE_ID_TOKEN": "eyJ..."}).preflight()  # type: ignore[union-attr]


# --- the settings ----------------------------------------------------------------------------------


def test_signing_settings() -> None:
    assert build_config({}).signing == "off"
    assert build_signer(build_config({}), {}) is None
    assert build_config({"signing-key": "k.pem"}).signing == "key"  # a key alone turns it on
    assert build_config({"signing": "key", "signing-key": "k.pem"}).public_params()["signing"] == "key"
    with pytest.raises(ConfigError, match="--signing: key needs signing-key"):
        build_config({"signing": "key"})
    with pytest.raises(ConfigError, match="--signing-key: given, but signing is sigstore"):
        build_config({"signing": "sigstore", "signing-key": "k.pem"})
    with pytest.raises(ConfigError, match="is not one of off, key, sigstore"):
        build_config({"signing": "gpg"})
    secret = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----"
    assert "MIGHAgEAMBMGByqGSM49" not in repr(build_config({"signing-key": secret}))


def test_verify_needs_one_way_to_trust() -> None:
    names = {"public-key": "--public-key", "identity": "--identity", "issuer": "--issuer"}
    with pytest.raises(ConfigError, match="verify needs the signer's public key"):
        build_verifier(None, None, None, names=names)
    with pytest.raises(ConfigError, match="not both"):
        build_verifier("k.pub", "me", "https://issuer", names=names)
    assert (
        build_verifier(None, "me", "https://issuer", names=names)
        .describe()
        .startswith("Sigstore identity me")
    )


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["verify"], "give a Hub repo (REPO[@REVISION]) or --local DIR"),
        (["verify", "acme/m", "--local", "."], "one of the two"),
        (["verify", "acme/m"], "verify needs the signer's public key"),
    ],
)
def test_verify_command_refuses_bad_input(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert words in capsys.readouterr().err


# --- the gate with a signer ----------------------------------------------------------------------------


def signed_run(world: World, signer: FakeSigner, **given: object):  # noqa: F811
    cfg = world.config(**given)
    shipper = HubShipper.create(cfg, world.registry, world.hub, world.merger, FakeCards(), signer)
    return run(
        cfg,
        RunContext(event_name="push", git_sha="a" * 40, actor="octocat", ci_run_url="https://ci/run/1"),
        world.candidate(cfg),
        registry=world.registry,
        shipper=shipper,
        files=world.files,
        clock=TickingClock(),
        sleep=lambda _: None,
    )


def test_an_unusable_signer_writes_nothing(world: World) -> None:  # noqa: F811
    signer = FakeSigner(world.journal, refuse="signing: sigstore needs the workflow's OIDC token")
    with pytest.raises(ConfigError, match="OIDC token"):
        signed_run(world, signer)
    assert world.journal == []


def test_the_signature_and_verdict_go_in_the_models_commit(world: World) -> None:  # noqa: F811
    world.registry.seed_champion(NAME, 0.1, WORSE)
    signer = FakeSigner(world.journal)
    result = signed_run(world, signer)
    assert result.status == "deployed"
    ops = world.journal.ops()
    assert ops.index("merger.merge") < ops.index("signer.sign") < ops.index("hub.push")
    assert ops.count("hub.push") == 1
    version = result.registered_version
    assert version is not None
    files = world.hub.files_at(REPO, world.hub.tags[(REPO, f"v{version}")])
    assert {SIGNATURE_FILE, VERDICT_FILE, "deploygate.json", "README.md"} <= set(files)
    # the signature covers every other file, the verdict and deploygate.json included
    assert set(signer.signed[0]) == set(files) - {SIGNATURE_FILE}
    # the version records the signature's digest
    tags = world.registry.versions[NAME][version].tags
    assert tags[records.TAG_SIGNATURE_SHA256] == hashlib.sha256(files[SIGNATURE_FILE]).hexdigest()
    assert tags[records.TAG_SIGNING] == "key"
    # the verdict's values are deployment_info.json's
    verdict = json.loads(files[VERDICT_FILE])
    info = tidy(deployment_info(world.files.written[-1]))
    for key in (
        "decision",
        "rule",
        "reason",
        "forced",
        "threshold",
        "weighted_score",
        "baseline_score",
        "improvement",
    ):
        assert verdict[key] == info[key], key
    assert verdict["registry"] == {
        "name": NAME,
        "version": version,
        "alias": "champion",
        "previous_version": info["registry"]["previous_version"],
    }
    assert verdict["registry"]["previous_version"] is not None
    assert verdict["context"] == info["context"] and verdict["context"]["ci_run_url"] == "https://ci/run/1"
    assert verdict["mlflow"]["run_id"] == info["mlflow"]["run_id"] == result.mlflow_run_id

    # verify through the Hub port: passes, then names a tampered file
    outcome = verify_revision(world.hub, REPO, f"v{version}", FakeVerifier())
    assert outcome.verified and outcome.verdict == verdict
    assert any(f"{NAME} v{version}" in line for line in verdict_lines(verdict))
    tampered = dict(files, **{"README.md": b"# another card\n"})
    world.hub._commit(REPO, tampered)
    bad = verify_revision(world.hub, REPO, None, FakeVerifier())
    assert not bad.verified and bad.problems == (
        "README.md: changed since it was signed (its SHA-256 differs)",
    )
    assert "NOT verified" in bad.headline()


def test_signing_off_pushes_no_signature_or_verdict(world: World) -> None:  # noqa: F811
    result = world.run(world.config(), world.candidate(world.config()))
    assert result.registered_version is not None
    files = world.hub.files_at(REPO, world.hub.tags[(REPO, f"v{result.registered_version}")])
    assert SIGNATURE_FILE not in files and VERDICT_FILE not in files
    assert records.TAG_SIGNATURE_SHA256 not in world.registry.versions[NAME][result.registered_version].tags


def test_verdict_text_is_data(world: World) -> None:  # noqa: F811
    signed_run(world, FakeSigner(world.journal))
    result = world.files.written[-1]
    text = verdict_text(result)
    assert parse_verdict(text) == json.loads(text)
    assert (
        parse_verdict("[1]") is None and parse_verdict("{") is None and parse_verdict('{"kind": "x"}') is None
    )
    document = verdict_document(result)
    assert document["format"] == 1 and document["kind"] == "deploygate/verdict"
    assert set(document["metrics"]) == set(GOOD)


def test_the_verdict_matches_its_documented_schema(world: World) -> None:  # noqa: F811
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[2] / "docs" / "verdict.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    world.registry.seed_champion(NAME, 0.1, WORSE)
    result = signed_run(world, FakeSigner(world.journal), guardrails="bleu4.min=0.1")
    pushed = world.hub.files_at(REPO, world.hub.tags[(REPO, f"v{result.registered_version}")])
    verdict = json.loads(pushed[VERDICT_FILE])
    jsonschema.validate(verdict, schema, cls=jsonschema.Draft202012Validator)
    assert verdict["guardrails"][0]["metric"] == "bleu4"


def test_the_summary_says_how_to_check_or_how_to_sign(world: World) -> None:  # noqa: F811
    from deploygate.core.render.report import render_summary

    signed = signed_run(world, FakeSigner(world.journal))
    assert f"deploygate verify {REPO}@v{signed.registered_version}" in render_summary(signed)
    unsigned = world.run(
        world.config(), world.candidate(world.config(), {k: v + 0.05 for k, v in GOOD.items()})
    )
    assert unsigned.status == "deployed"
    assert "Not signed: set <code>signing-key</code>" in render_summary(unsigned)


def test_the_summary_of_a_rerun_that_found_the_tag_does_not_say_unsigned(world: World) -> None:  # noqa: F811
    import dataclasses

    from deploygate.core.render.report import render_summary

    signed = signed_run(world, FakeSigner(world.journal))
    assert signed.hub is not None
    # what a re-run returns when the version's tag is on the Hub already: the push, no new signature
    rerun = dataclasses.replace(
        signed,
        hub=dataclasses.replace(signed.hub, signature_sha256=None),
        config=dataclasses.replace(signed.config, signing="key"),
    )
    summary = render_summary(rerun)
    assert "Not signed" not in summary and "nothing was signed again" in summary
    assert f"deploygate verify {REPO}@v{signed.registered_version}" in summary

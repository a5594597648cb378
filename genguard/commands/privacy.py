"""The `genguard privacy` commands: epsilon accounting, ledger verification and the empirical canary audit."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from genguard.output import HelpGroup, echo, human_to_stderr, json_option, write_json

def _accountant_choice() -> click.Choice:
    """The registered accountants (built-in and entry points): adding one adds it here."""
    from genguard.guardrails.privacy.accountants import REGISTRY

    return click.Choice(list(REGISTRY))


def _accountant_help() -> str:
    from genguard.guardrails.privacy.accountants import REGISTRY

    return "Accountant (an upper bound on epsilon): " + "; ".join(f"{n}: {c.description}" for n, c in REGISTRY.items())


def _write_json(path: str, obj: Any) -> None:
    write_json(path, obj)


def _fmt(x: Any, spec: str = ".4g") -> str:
    return "n/a" if x is None else format(x, spec)


@click.group("privacy", cls=HelpGroup)
def privacy() -> None:
    """Check a DP claim: compute epsilon, verify a run's ledger, audit a training procedure empirically."""


@privacy.command("epsilon")
@click.option("--sample-rate", "-q", type=float, required=True, help="Poisson sampling rate q (expected batch / n).")
@click.option("--noise-multiplier", "-s", type=float, default=None, help="Noise multiplier sigma (omit with --target-epsilon).")
@click.option("--steps", "-t", type=click.IntRange(min=0), required=True, help="Number of DP-SGD steps.")
@click.option("--delta", "-d", type=float, default=1e-5, show_default=True, help="Target delta (< 1/n).")
@click.option("--accountant", type=_accountant_choice(), default="rdp", show_default=True, help=_accountant_help())
@click.option("--target-epsilon", type=float, default=None,
              help="Inverse: print the smallest noise multiplier that meets this epsilon.")
@json_option("Write the result as JSON to FILE ('-' or a bare --json: standard output, instead of the summary).",
             flag_means_stdout=True)
def epsilon_cmd(sample_rate: float, noise_multiplier: float | None, steps: int, delta: float, accountant: str,
                target_epsilon: float | None, json_out: str | None) -> None:
    """Epsilon of Poisson-sampled Gaussian DP-SGD (RDP, PRV from opacus; PLD from dp-accounting), or its inverse."""
    from genguard.guardrails.privacy.accounting import epsilon_report, noise_multiplier_for_epsilon
    from genguard.guardrails.privacy.errors import PrivacyError

    if (noise_multiplier is None) == (target_epsilon is None):
        raise PrivacyError("give exactly one of --noise-multiplier and --target-epsilon")
    inverse = target_epsilon is not None
    if inverse:
        noise_multiplier = noise_multiplier_for_epsilon(target_epsilon, sample_rate, steps, delta, accountant)
    rep = epsilon_report(sample_rate, noise_multiplier, steps, delta, accountant)
    if inverse:
        rep["target_epsilon"] = target_epsilon
    write_json(json_out, rep)
    if human_to_stderr(json_out):
        return
    if inverse:
        click.echo(f"noise multiplier {rep['noise_multiplier']:.4f} meets epsilon <= {target_epsilon:g}")
    click.echo(f"epsilon = {rep['epsilon']:.4f} at delta = {delta:g}  ({accountant.upper()} accountant, guarantee)")
    click.echo(f"  q = {sample_rate:g}, sigma = {rep['noise_multiplier']:.4g}, {steps} steps")
    gdp = rep["gdp_approximation"]
    if gdp.get("epsilon") is None:
        click.echo(f"  GDP approximation (not a guarantee): not computed ({gdp.get('reason')})")
    else:
        click.echo(f"  GDP approximation (not a guarantee): epsilon ~ {gdp['epsilon']:.4f}")


@privacy.command("verify")
@click.argument("ledger", type=click.Path(dir_okay=True, file_okay=True))
@json_option("Write the verification as JSON to FILE ('-': standard output, the summary then goes to stderr).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Weights file to hash (default: weights.safetensors beside the ledger).")
@click.option("--trusted-key", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Ed25519 public key (PEM) the ledger must be signed with.")
@click.option("--recompute-with", "recompute_with", type=_accountant_choice(), multiple=True,
              help="Accountant to recompute the claim with (repeatable; default: prv and pld, with rdp when both "
                   "refuse the step count).")
def verify_cmd(ledger: str, json_out: str | None, weights: str | None, trusted_key: str | None,
               recompute_with: tuple[str, ...]) -> int:
    """Recompute a run's DP claim independently (PRV, PLD) and list findings; exit 1 when inconsistent."""
    from genguard.guardrails.privacy.verify import RECOMPUTE_WITH, load_trusted_key, verify_ledger

    rep = verify_ledger(ledger, weights=weights, trusted_key=load_trusted_key(trusted_key),
                        accountants=tuple(recompute_with) or RECOMPUTE_WITH)
    write_json(json_out, rep)
    say = echo(json_out)
    verdict = "CONSISTENT" if rep["consistent"] else "INCONSISTENT"
    say(f"{rep['ledger']}: {verdict}")
    say(f"  signature: {rep['signature']['state']} (key {rep['signature'].get('key_id')})")
    say(f"  weights:   {rep['weights']['state']}")
    if rep["private"]:
        rec = ", ".join(f"{k.upper()} {_fmt(v)}" for k, v in rep["recomputed"].items())
        say(f"  claimed epsilon {_fmt(rep['claimed_epsilon'])} ({str(rep['accountant']).upper()}) at delta "
            f"{_fmt(rep['delta'], 'g')}; recomputed: {rec}")
    for f in rep["findings"]:
        say(f"  [{f['severity']}] {f['code']}: {f['message']}")
    return 0 if rep["consistent"] else 1


@privacy.command("audit")
@click.option("--generator", "generator", default="vae", show_default=True, help="Reference generator to audit.")
@click.option("--epsilon", type=float, default=None, help="Train with DP-SGD at this target epsilon.")
@click.option("--non-private", is_flag=True, help="Audit non-private training (the attack's sanity check).")
@click.option("--canaries", type=click.IntRange(min=2, max=100_000), default=1000, show_default=True,
              help="Number of canaries m.")
@click.option("--epochs", type=click.IntRange(min=1, max=10_000), default=None,
              help="Training epochs (default: the generator's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the canary draw and of training.")
@click.option("--delta", type=float, default=1e-5, show_default=True,
              help="Delta at which the empirical lower bound on epsilon is stated.")
@click.option("--confidence", type=float, default=0.95, show_default=True,
              help="Confidence of the lower bound (it fails to hold with probability at most 1 - this).")
@click.option("--black-box-only", is_flag=True, help="Score by loss only (no white-box gradient alignment).")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Also run sample-only membership inference against this saved model (embedded digits split).")
@click.option("--quick", is_flag=True, help="The generator's quick settings, at most 200 canaries and 10 epochs: "
              "seconds, weaker bound.")
@json_option("Write the audit as JSON to FILE ('-': standard output).")
@click.option("--white-box", "white_box_dirac", is_flag=True,
              help="Audit the DP-SGD mechanism itself with Dirac gradient canaries inserted before the noise "
                   "(any gradient-trained generator; the auditor sees every noisy update).")
def audit_cmd(generator: str, epsilon: float | None, non_private: bool, canaries: int, epochs: int | None, seed: int,
              delta: float, confidence: float, black_box_only: bool, model_dir: str | None, quick: bool,
              json_out: str | None, white_box_dirac: bool = False) -> int | None:
    """Empirical lower bound on epsilon from one training run with canaries (Steinke, Nasr & Jagielski 2023)."""
    say = echo(json_out)
    from genguard.audits.privacy import canary_audit, model_membership_inference
    from genguard.guardrails.privacy import PrivateTrainer
    from genguard.guardrails.privacy.errors import PrivacyError

    if white_box_dirac:
        return _dirac_audit(generator, epsilon, non_private, canaries, epochs, confidence, quick, json_out)

    if non_private and epsilon is not None:
        raise PrivacyError("give --epsilon or --non-private, not both")
    if not non_private and epsilon is None:
        epsilon = 10.0
    if epsilon is not None and not (epsilon > 0 and math.isfinite(epsilon)):
        raise PrivacyError(f"epsilon must be a positive finite number, got {epsilon}")
    from genguard.generators import quick_params

    params: dict[str, Any] = {}
    if quick:  # the generator's own small settings (as `genguard train --quick`), fewer canaries and epochs
        params.update(quick_params(generator))
        canaries = min(canaries, 200)
        epochs = epochs or 10
    if epochs is not None:
        params["epochs"] = epochs
    trainer = None if non_private else PrivateTrainer(target_epsilon=epsilon, delta=delta)
    result: dict[str, Any] = {"canary_audit": canary_audit(
        generator, trainer=trainer, num_canaries=canaries, seed=seed, generator_params=params,
        white_box=not black_box_only, delta=delta, confidence=confidence, progress=True)}
    audit = result["canary_audit"]
    say(f"canary audit of {generator} ({'non-private' if non_private else f'DP, target epsilon {epsilon:g}'}), "
               f"m = {audit['num_canaries']} canaries ({audit['num_included']} included)")
    best = audit["best"]
    say(f"  empirical epsilon >= {audit['epsilon_lower_bound']:.3f} at {confidence:.0%} confidence, delta {delta:g} "
               f"({best['num_correct']}/{best['num_guesses']} correct, score {best['score']}; {audit['correction']})")
    if audit.get("claimed_epsilon") is not None:
        say(f"  claimed epsilon {audit['claimed_epsilon']:.3f}: "
                   + ("REFUTED by the audit" if audit["bound_exceeds_claim"] else "not refuted (a lower bound cannot confirm it)"))
    if model_dir:
        from genguard import generators
        from genguard.generators.data import digits_split

        gen = generators.load(model_dir)
        train, holdout = digits_split()
        mia = model_membership_inference(gen, train, holdout, seed=seed)
        result["membership_inference"] = mia
        for name in ("gan_leaks", "monte_carlo", "domias"):
            r = mia.get(name, {})
            if r.get("auc") is not None:
                say(f"  MIA {name}: AUC {r['auc']:.3f} [{r['auc_ci95'][0]:.3f}, {r['auc_ci95'][1]:.3f}], "
                           f"TPR@1%FPR {r['tpr_at_1pct_fpr']:.3f}")
    _write_json(json_out, result)


def _dirac_audit(generator: str, epsilon: float | None, non_private: bool, canaries: int, epochs: int | None,
                 confidence: float, quick: bool, json_out: str | None) -> int:
    """``privacy audit --white-box``: Dirac gradient canaries in the mechanism; exit 1 when the claim is refuted."""
    say = echo(json_out)
    from genguard.audits.whitebox import white_box_audit
    from genguard.guardrails.privacy import PrivateTrainer
    from genguard.guardrails.privacy.errors import PrivacyError

    if non_private:
        raise PrivacyError("--white-box audits the DP-SGD mechanism; it has nothing to audit with --non-private")
    epsilon = 10.0 if epsilon is None else epsilon
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise PrivacyError(f"epsilon must be a positive finite number, got {epsilon}")
    params: dict[str, Any] = {}
    if quick:
        canaries = min(canaries, 200)
        epochs = epochs or 2
    if epochs is not None:
        params["epochs"] = epochs
    audit = white_box_audit(generator, trainer=PrivateTrainer(target_epsilon=epsilon), num_canaries=canaries,
                            generator_params=params, confidence=confidence, progress=True)
    best = audit["best"]
    say(f"white-box audit of {generator} (DP, target epsilon {epsilon:g}): m = {audit['num_canaries']} Dirac "
               f"canaries ({audit['num_included']} included), {audit['steps']} steps, q = {audit['sample_rate']:.4g}")
    say(f"  empirical epsilon >= {audit['epsilon_lower_bound']:.3f} at {confidence:.0%} confidence, delta "
               f"{audit['delta']:.3g} ({best['num_correct']}/{best['num_guesses']} correct, score {best['score']}; "
               f"{audit['correction']}); one run with these guesses cannot show more than {audit['ceiling']:.2f}")
    say(f"  claimed epsilon {audit['claimed_epsilon']:.3f} at delta {audit['training_delta']:.3g}, "
               f"{audit['claimed_epsilon_at_audit_delta']:.3f} at the audit's delta: "
               + ("REFUTED by the audit" if audit["bound_exceeds_claim"] else "not refuted (a lower bound cannot confirm it)"))
    _write_json(json_out, {"white_box_audit": audit})
    return 1 if audit["bound_exceeds_claim"] else 0


def register(group: click.Group) -> None:
    group.add_command(privacy)

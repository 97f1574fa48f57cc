"""What one bench run covers: the profile, cells and providers a user asked for, checked once.

``make bench`` (bench/run.py) and ``pytest bench`` (bench/conftest.py) both resolve
``--profile``/``--cells``/``--providers`` here, before any case is collected, so a bad or empty
choice is one line naming the option (run.py: argparse's exit 2; pytest: a usage error), and a
choice that would run nothing at all (e.g. only the variable-length providers without the LSTM)
is refused instead of ending in an empty report.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.cases import Profile, e2e_cases, layer_cases, resolve_cells, resolve_profile, varlen_cases
from bench.providers import LAYER_PROVIDERS, PEER_PROVIDERS, PROVIDERS
from bench.varlen import VARLEN_PROVIDERS

ALL_PROVIDERS = tuple(dict.fromkeys(PROVIDERS + VARLEN_PROVIDERS + PEER_PROVIDERS))


class SelectionError(ValueError):
    """A bad --profile/--cells/--providers choice; ``option`` names the option at fault."""

    def __init__(self, option: str, detail: str):
        super().__init__(f"{option}: {detail}")
        self.option, self.detail = option, detail


@dataclass(frozen=True)
class Selection:
    profile: Profile
    cells: tuple[str, ...]
    providers: tuple[str, ...]  # nn first: the others' char-LM perplexity is compared with it

    def layer_cases(self):
        return layer_cases(self.profile, [p for p in self.providers if p in LAYER_PROVIDERS], self.cells,
                           peers=PEER_PROVIDERS)

    def varlen_cases(self):  # nn.LSTM's packed path: LSTM only
        chosen = [p for p in self.providers if p in VARLEN_PROVIDERS] if "lstm" in self.cells else []
        return varlen_cases(self.profile, chosen)

    def e2e_cases(self):
        return e2e_cases(self.profile, [p for p in self.providers if p in PROVIDERS], self.cells)


def resolve_providers(requested: str | None) -> tuple[str, ...]:
    """The providers named in ``requested`` (comma-separated; None: all), nn first; ValueError
    naming the unknown ones, or an empty choice."""
    if requested is None:
        return tuple(sorted(ALL_PROVIDERS, key=lambda p: (p != "nn", ALL_PROVIDERS.index(p))))
    chosen = list(dict.fromkeys(p.strip() for p in requested.split(",") if p.strip()))
    unknown = [p for p in chosen if p not in ALL_PROVIDERS]
    if unknown or not chosen:
        raise ValueError(f"expected a comma-separated subset of {', '.join(ALL_PROVIDERS)}, got {requested!r}")
    return tuple(sorted(chosen, key=lambda p: (p != "nn", ALL_PROVIDERS.index(p))))


def resolve(profile: str, cells: str | None = None, providers: str | None = None) -> Selection:
    """The run's :class:`Selection`; :class:`SelectionError` naming the option for a bad or empty
    choice, or for a choice under which the profile has no case at all."""
    try:
        chosen_profile = resolve_profile(profile)
    except ValueError as err:
        raise SelectionError("--profile", str(err).removeprefix("--bench-profile ")) from None
    try:
        chosen_cells = resolve_cells(chosen_profile, cells)
    except ValueError as err:
        raise SelectionError("--cells", str(err)) from None
    try:
        chosen_providers = resolve_providers(providers)
    except ValueError as err:
        raise SelectionError("--providers", str(err)) from None
    selection = Selection(chosen_profile, chosen_cells, chosen_providers)
    if not (selection.layer_cases() or selection.varlen_cases() or selection.e2e_cases()):
        raise SelectionError("--providers", f"{', '.join(chosen_providers)} run no case of the "
                             f"{chosen_profile.name} profile for {', '.join(chosen_cells)} "
                             "(nn-padded and triton-padded: the LSTM's variable-length benchmark only)")
    return selection

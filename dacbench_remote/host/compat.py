"""The keywords of `dacbench.container.RemoteRunner` (DACBench 0.5.6), translated to ours.

A DACBench user changes only the import. Each keyword either maps onto a setting of ours or
raises BadConfig saying why it cannot apply; none is silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadConfig

REGISTRY_SCHEMES = ("oras://", "docker://", "library://")
URL_SCHEMES = ("https://", "http://", *REGISTRY_SCHEMES)


@dataclass
class ContainerChoice:
    """What `container_name/source/tag` and `experiment_identifier` ask for, in our terms."""

    experiment: str | None = None
    image: Path | None = None        # a local .sif to run as it is
    source: str | None = None        # a URL the catalog must know (and verify) the image of
    family: str | None = None        # catalog family the image must come from
    binds: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def parse_env_str(env_str: str | None) -> dict[str, str]:
    """`VAR1=VALUE1,VAR2=VALUE2` (DACBench's env_str) as a dict."""
    env: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (env_str or "").split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise BadConfig(f"env_str item {item!r} is not VAR=VALUE (expected VAR1=V1,VAR2=V2)")
        env[name.strip()] = value
    return env


def parse_bind_str(bind_str: str | None) -> list[str]:
    """`src[:dest[:opts]]`, comma-separated (DACBench's bind_str), as a list of bind specs."""
    return [part.strip() for part in (bind_str or "").split(",") if part.strip()]


def choose_container(
    *,
    experiment: str | None,
    experiment_identifier: str | None,
    image: str | Path | None,
    container_name: str | None,
    container_source: str | Path | None,
    container_tag: str | None,
) -> ContainerChoice:
    """Reconcile our `experiment`/`image` with DACBench's container keywords (BadConfig on conflict)."""
    if experiment and experiment_identifier and experiment != experiment_identifier:
        raise BadConfig(f"experiment={experiment!r} and experiment_identifier="
                        f"{experiment_identifier!r} disagree; they are the same setting, pass one")
    choice = ContainerChoice(experiment=experiment or experiment_identifier, family=container_name)
    tag = None if container_tag in (None, "", "latest") else str(container_tag)
    if container_source is not None and image is not None:
        raise BadConfig("image= and container_source= both name an image; pass one")
    source = str(container_source) if container_source is not None else None
    if source and source.startswith(URL_SCHEMES):
        choice.source = _tagged(source, tag) if source.startswith(REGISTRY_SCHEMES) else source
        if tag and not source.startswith(REGISTRY_SCHEMES):
            raise BadConfig(f"container_tag={tag!r} applies to registry sources "
                            f"({', '.join(REGISTRY_SCHEMES)}), not to {source}")
        return choice
    if source is not None or image is not None:
        choice.image = Path(source if source is not None else image)  # type: ignore[arg-type]
        if tag:
            raise BadConfig(f"container_tag={tag!r} cannot select a version of the local file "
                            f"{choice.image}; drop it, or pass experiment_identifier instead")
        return choice
    if tag:
        # DACBench uses the tag as the version of the experiment's container.
        if choice.experiment and choice.experiment not in (tag, f"exp:{tag}"):
            raise BadConfig(f"container_tag={tag!r} and experiment {choice.experiment!r} "
                            "disagree; the tag names the experiment version, pass one")
        choice.experiment = choice.experiment or tag
    return choice


def _tagged(source: str, tag: str | None) -> str:
    """A registry reference with `tag` appended unless it already has a tag or digest."""
    if tag is None:
        return source
    last = source.rsplit("/", 1)[-1]
    if ":" in last or "@" in last:
        raise BadConfig(f"container_source {source} already names a tag or digest; "
                        f"drop container_tag={tag!r}")
    return f"{source}:{tag}"

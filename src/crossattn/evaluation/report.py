"""What an evaluation run writes: ``report.json``, a printed table, a contact sheet of failures."""

from __future__ import annotations

from pathlib import Path

from .run import EvalSettings, SampleResult, accuracy_table, grounding_table

SHEET_MAX = 48  # failures drawn on the contact sheet
TILE_IMAGE = 96  # pixels: each image is upscaled (nearest) to this size on the sheet
TILE_TEXT = 300  # pixels of text beside each image


def build_report(
    results: list[SampleResult],
    settings: EvalSettings,
    model: dict,
    scheduler: str,
    seconds: float,
    grounding_reason: str | None,
    clip: tuple[dict | None, str | None] = (None, "not measured"),
) -> dict:
    """The report: settings, model identity, per-category accuracy, grounding, counts, per-sample records."""
    from .. import __version__

    kinds: dict[str, int] = {}
    for r in results:
        kinds[r.check.kind] = kinds.get(r.check.kind, 0) + 1
    return {
        "version": __version__,
        "model": model,
        "settings": {**settings.to_dict(), "scheduler": scheduler},
        "accuracy": accuracy_table(results),
        "grounding": grounding_table(results) if grounding_reason is None else None,
        "grounding_unavailable": grounding_reason,
        "clip": clip[0],  # per kind: mean CLIP score, share closer to the prompt than to a hard negative
        "clip_unavailable": clip[1],
        "counts": {"prompts": len(results), "by_kind": kinds, "failures": sum(not r.check.passed for r in results)},
        "seconds": round(seconds, 1),
        "samples": [r.to_dict() for r in results],
    }


def format_table(report: dict) -> str:
    """A short plain-text table of the headline numbers."""
    lines = [f"{'category':<28}{'accuracy':>9}{'n':>6}"]
    for key, row in report["accuracy"].items():
        if "[" not in key:
            lines.append(f"{key:<28}{row['accuracy']:>9.3f}{row['n']:>6}")
    if report["grounding"] is None:
        lines.append(f"grounding: not measured ({report['grounding_unavailable']})")
    else:
        for kind, row in report["grounding"].items():
            iou = "-" if row["mean_iou"] is None else f"{row['mean_iou']:.3f}"
            lines.append(f"{'grounding IoU ' + kind:<28}{iou:>9}{row['n']:>6}")
    if report.get("clip") is None:
        lines.append(f"CLIP judge: not measured ({report.get('clip_unavailable')})")
    else:
        lines.append(f"{'CLIP judge':<28}{'score':>9}{'prefers':>9}{'n':>6}")
        for kind, row in report["clip"].items():
            lines.append(f"{'  ' + kind:<28}{row['clip_score']:>9.2f}{row['prefers_prompt']:>9.3f}{row['n']:>6}")
    return "\n".join(lines)


def _tile(result: SampleResult, font):
    """One failure: the image (nearest-upscaled) and, beside it, caption, failed checks, what was seen."""
    import textwrap

    from PIL import Image, ImageDraw

    tile = Image.new("RGB", (TILE_IMAGE + TILE_TEXT, TILE_IMAGE + 8), "white")
    image = Image.fromarray(result.image).resize((TILE_IMAGE, TILE_IMAGE), Image.NEAREST)
    tile.paste(image, (4, 4))
    failed = ", ".join(k for k, ok in result.check.results.items() if not ok and k != "all")
    text = [result.prompt.caption, f"failed: {failed}"] + textwrap.wrap(f"saw: {result.check.seen()}", 48)
    ImageDraw.Draw(tile).multiline_text((TILE_IMAGE + 10, 6), "\n".join(text[:7]), fill="black", font=font)
    return tile


def contact_sheet(results: list[SampleResult], columns: int = 3):
    """A PIL image of up to SHEET_MAX failures, or None when nothing failed."""
    from PIL import Image, ImageFont

    failures = [r for r in results if not r.check.passed][:SHEET_MAX]
    if not failures:
        return None
    font = ImageFont.load_default()
    tiles = [_tile(r, font) for r in failures]
    w, h = tiles[0].size
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (w * min(columns, len(tiles)), h * rows), (235, 235, 235))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * w, (i // columns) * h))
    return sheet


def write_outputs(out: Path, report: dict, results: list[SampleResult]) -> list[Path]:
    """``report.json`` and (when something failed) ``failures.png``, each written atomically."""
    from ..files import atomic_write, atomic_write_json

    written = [atomic_write_json(out / "report.json", report)]
    sheet = contact_sheet(results)
    if sheet is not None:
        written.append(atomic_write(out / "failures.png", lambda tmp: sheet.save(tmp, format="PNG")))
    return written

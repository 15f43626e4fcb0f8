"""Generic catalog layout: loading, validation errors that name the field, the MovieLens adapter."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from coldstart.errors import InvalidInputError, ModalityError
from models.catalog import Catalog, adapt_movielens

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "movielens"


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="JPEG")
    return buf.getvalue()


def _write(root: Path, items: str, interactions: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "img").mkdir(exist_ok=True)
    (root / "img" / "a.jpg").write_bytes(_jpeg())
    (root / "items.csv").write_text(items)
    (root / "interactions.csv").write_text(interactions)
    return root


ITEMS = (
    "item_id,title,text,category,image_path\n"
    'a,Red jacket,"Warm, waterproof",Outerwear,img/a.jpg\n'
    "b,Blue mug,,Kitchen,\n"
    "c,,,,img/a.jpg\n"
)
INTER = "user_id,item_id,value,ts\nu1,a,5,2024-01-02\nu1,b,1,1700000000\nu2,c,3.5,2024-01-02T10:00:00Z\n"


def test_load_valid_catalog(tmp_path: Path) -> None:
    cat = Catalog.load(_write(tmp_path / "cat", ITEMS, INTER))
    assert cat.item_ids == ["a", "b", "c"]
    a = cat.item("a")
    assert a.image_path is not None and a.image_path.is_file()
    assert a.full_text() == "Red jacket. Outerwear. Warm, waterproof"
    assert cat.item("b").image_path is None
    content = a.content()
    assert content.item_id == "a" and content.image is not None and content.image[:2] == b"\xff\xd8"
    assert a.content(title_only=True).text == "Red jacket"
    assert cat.item("c").content().text == ""
    inter = cat.interactions
    assert list(inter.columns) == ["user_id", "item_id", "value", "ts"]
    assert str(inter["ts"].dtype) == "datetime64[ns, UTC]"
    assert inter["value"].tolist() == [5.0, 1.0, 3.5]
    assert inter["ts"].iloc[0] == pd.Timestamp("2024-01-02", tz="UTC")
    assert inter["ts"].iloc[1] == pd.Timestamp(1_700_000_000, unit="s", tz="UTC")
    assert inter["ts"].iloc[2] == pd.Timestamp("2024-01-02T10:00:00", tz="UTC")


@pytest.mark.parametrize(
    ("items", "inter", "needle"),
    [
        ("item_id,title\na,x\na,y\n", INTER, "items.csv row 2.item_id='a': duplicate of row 1"),
        ("item_id,title\n,x\n", INTER, "items.csv row 1.item_id"),
        ("title,text\nx,y\n", INTER, "missing required column 'item_id'"),
        (
            "item_id,title,image_path\na,x,img/missing.jpg\n",
            INTER,
            "items.csv row 1.image_path='img/missing.jpg'",
        ),
        ("item_id,title,image_path\na,x,/etc/passwd\n", INTER, "must be relative"),
        (ITEMS, "user_id,item_id,value,ts\nu1,a,5,2024-01-02\nu1,zz,1,1\n", "row 2.item_id='zz'"),
        (ITEMS, "user_id,item_id,value,ts\nu1,a,five,2024-01-02\n", "row 1.value='five'"),
        (ITEMS, "user_id,item_id,value,ts\nu1,a,5,2024-01-02\nu1,a,5,yesterday\n", "row 2.ts='yesterday'"),
        (ITEMS, "user_id,item_id,value\nu1,a,5\n", "missing required column 'ts'"),
        (ITEMS, "user_id,item_id,value,ts\n,a,5,1\n", "row 1.user_id"),
    ],
)
def test_bad_rows_name_the_field(tmp_path: Path, items: str, inter: str, needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Catalog.load(_write(tmp_path / "cat", items, inter))
    assert needle in str(info.value)


def test_item_without_any_modality_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModalityError, match=r"items.csv row 2.item_id='b'"):
        Catalog.load(_write(tmp_path / "cat", "item_id,title,text,image_path\na,x,,\nb,,,\n", INTER))


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not a directory"):
        Catalog.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match=r"items\.csv"):
        Catalog.load(tmp_path / "empty")


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared MovieLens data not present")
def test_adapter_on_real_movielens(tmp_path: Path) -> None:
    report = adapt_movielens(SHARED, tmp_path / "ml")
    assert report.n_items > 2500 and report.n_users == 610 and report.n_interactions > 50_000
    assert (tmp_path / "ml" / "images").is_symlink()  # posters referenced, never copied
    cat = Catalog.load(tmp_path / "ml")
    toy = cat.item("1")
    assert toy.title == "Toy Story (1995)"
    assert "Animation" in toy.category and "Woody" in toy.text
    assert toy.full_text().startswith("Toy Story (1995). Adventure, Animation")
    image = toy.read_image()
    assert image is not None and Image.open(io.BytesIO(image)).size[0] > 50
    assert set(cat.interactions["item_id"]) <= set(cat.item_ids)
    assert cat.interactions["value"].between(0.5, 5.0).all()

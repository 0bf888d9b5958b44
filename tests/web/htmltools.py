"""A tiny HTML tree for assertions (stdlib html.parser): find elements by attribute, read their text."""
from __future__ import annotations

import re
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Element:
    def __init__(self, tag: str, attrs: dict, parent: "Element | None"):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list = []

    @property
    def text(self) -> str:
        parts = []
        for c in self.children:
            parts.append(c.text if isinstance(c, Element) else c)
        return re.sub(r"\s+", " ", "".join(parts)).strip()

    def iter(self):
        for c in self.children:
            if isinstance(c, Element):
                yield c
                yield from c.iter()

    def find_all(self, tag: str | None = None, **attrs) -> list["Element"]:
        out = []
        for el in self.iter():
            if tag and el.tag != tag:
                continue
            if all(el.attrs.get(k.replace("_", "-")) == v if v is not True else k.replace("_", "-") in el.attrs
                   for k, v in attrs.items()):
                out.append(el)
        return out

    def find(self, tag: str | None = None, **attrs) -> "Element | None":
        found = self.find_all(tag, **attrs)
        return found[0] if found else None

    def testid(self, name: str) -> "Element":
        el = self.find(data_testid=name)
        assert el is not None, f"no element with data-testid={name!r}"
        return el


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        el = Element(tag, {k: (v if v is not None else "") for k, v in attrs}, self.cur)
        self.cur.children.append(el)
        if tag not in VOID:
            self.cur = el

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Element(tag, {k: (v or "") for k, v in attrs}, self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(html: str) -> Element:
    b = _Builder()
    b.feed(html)
    b.close()
    return b.root


def hrefs(root: Element) -> list[str]:
    """Every URL the page links to or submits to."""
    out = [el.attrs["href"] for el in root.find_all("a") if "href" in el.attrs]
    out += [el.attrs.get("action", "") for el in root.find_all("form")]
    return out

"""Moodle's own rules for the grading worksheet and the "Download all submissions" zip, in one place.

The kit writes a worksheet that Moodle's "Upload grading worksheet" imports as meant, so this module follows
what Moodle's code does with it, not what a CSV "usually" is:

* Reading the upload: ``lib/csvlib.class.php`` ``csv_import_reader::load_csv_content`` trims the file, turns
  ``\\r\\n`` into ``\\n``, parses it with PHP's ``fgetcsv`` (escape character: a backslash) and refuses the whole
  file when a row has another number of cells than the header ("csvweirdcolumns"). PHP's ``fgetcsv`` takes
  ``\\"`` inside a quoted cell as a quote that does not end the cell, where every other CSV reader (Python's,
  a spreadsheet's) sees a backslash and the end of the cell: one ``\\"`` in a feedback text (a Windows path in
  an error message) shifts the cells of the row. So no cell the kit writes holds a backslash or a quote as
  such (:func:`html_cell`). The kit reads the worksheet as ``fgetcsv`` does (:func:`read_rows`), so it sees
  the cells Moodle sees, writes it quoted as ``fputcsv`` quotes (:func:`write_line`) and reads every row back
  before saving: an untouched cell that PHP would read differently stops the kit (:meth:`Worksheet.text`).
* Finding the columns: ``mod/assign/feedback/offline/importgradeslib.php``
  ``assignfeedback_offline_grade_importer::init`` matches the header cells exactly against the strings of the
  uploader's language: ``get_string('recordid', 'assign')``, ``get_string('grade')``,
  ``get_string('lastmodifiedgrade', 'assign')`` and the feedback plugins' editor fields (``Feedback
  comments``); ``next()`` reads the participant from the Identifier's digits (``substr`` after
  ``get_string('hiddenuser', 'assign')``). The columns and their order come from ``mod/assign/gradingtable.php``
  ``assign_grading_table::__construct`` (download mode): Identifier, Full name, (user fields), Status, Group
  (team submissions), (Marker), Grade, Maximum grade or Scale, (Marking workflow state), Grade can be
  changed, Last modified (submission), (Online text), Last modified (grade), Feedback comments. :data:`HEADERS`
  holds those strings in the languages below; ``--columns`` names them for any other language.
* Numbers: ``assign_grading_table::display_grade`` and ``col_grademax`` write ``format_float`` (the language's
  ``decsep``: ``10,00`` in German); ``assign_feedback_offline::process_import_grades``
  (``mod/assign/feedback/offline/locallib.php``) reads the Grade with ``unformat_float`` (``lib/moodlelib.php``:
  spaces removed, ``decsep`` replaced by a point, PHP's ``(float)``: ``7.50`` read where ``decsep`` is a comma
  gives 7.5, but ``7,50`` where it is a point gives 7). The kit writes grades in the worksheet's own format
  (:func:`decimal_separator`, :func:`format_grade`) and reads Maximum grade the same way (:func:`unformat_float`).
* What is imported: ``process_import_grades`` skips a grade that is empty, unchanged, negative, above the
  maximum, newer in Moodle, or locked (``grading_disabled``: the worksheet's "Grade can be changed" = No), and
  *replaces* the feedback comment with the cell's text. So the kit keeps a locked row's grade, says in its
  feedback that the grade stays, appends its feedback to the comment already there (:meth:`Worksheet.add_feedback`)
  and refuses a scale-graded assignment (Moodle wants the scale's words there, the kit has points).
* The download: ``mod/assign/classes/downloader.php`` (4.1+) ``get_student_prefix`` and
  ``load_submissionplugin_filelist``; ``mod/assign/locallib.php`` ``assign::download_submissions`` (up to 4.0).
  The prefix is the full name (or ``get_string('participant', 'assign')`` with blind marking) with every ``_``
  replaced by a space, then ``_<unique id>``; for team submissions from 4.1 the group's name and ``_<group
  id>`` (no id for the default group) and one folder per group; up to 4.0 ``<group>-<full name>_<unique id>``,
  one folder per member. Then ``_<assignsubmission>_<plugin>`` and, with "Download submissions in folders",
  ``/<file>`` (4.1+) or ``_/<file>`` (up to 4.0), else ``_<file>`` in one flat folder. :func:`parse_path` reads
  all of these; :meth:`Worksheet.owners` maps a group's folder to the group's members through the worksheet's
  Group column (the download names no member), or through a ``--teams`` file where two groups share a name.

Example:
    >>> sheet = Worksheet.parse("ID,Vollständiger Name,Status,Bewertung,Bestwertung,"
    ...     "Bewertung kann geändert werden,Zuletzt geändert (Bewertung),Feedback als Kommentar\\n"
    ...     "Teilnehmer/in12,Ann Lee,-,,\\"10,00\\",Ja,-,Gut\\n")
    >>> row = sheet.rows[0]
    >>> sheet.language, sheet.decsep, sheet.identifier(row), sheet.maximum(row)
    ('de', ',', '12', 10.0)
    >>> sheet.set_grade(row, 7.5); sheet.add_feedback(row, '<p>Checks: "ok"</p>'); row[3]
    '7,50'
    >>> row[7]
    'Gut<div class="kit-grading"><p>Checks: &quot;ok&quot;</p></div>'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from helpers.errors import KitError

ROLES = ("identifier", "fullname", "group", "grade", "maximum", "scale", "changeable", "modified", "feedback")
REQUIRED = ("identifier", "grade", "modified")  # the three Moodle's importer itself needs (init() above)

# The worksheet's headers per language, from Moodle's language packs (AMOS). Where each came from:
#   en: moodle/moodle mod/assign/lang/en/assign.php, lang/en/moodle.php (grade, fullname, yes, no) and
#       mod/assign/feedback/comments/lang/en (pluginname 'Feedback comments'); "Maximum Grade" is the older
#       English string (the kit's test worksheets and Moodle up to 3.x), the match ignores case.
#   de, fr, es, sv: the language packs' assign.php found in the search index (AMOS 4.x exports): recordid,
#       maxgrade, gradecanbechanged, lastmodifiedgrade, hiddenuser, defaultteam, submissionteam (see the marks).
#   Marked "unverified": core strings (grade, fullname, yes/no), the comments plugin's name and the whole of
#       fi were not in the index; they are the AMOS strings as known to the author, not checked against a file.
#       A wrong one only means that language needs --columns; it never maps a column to the wrong role,
#       because a column is also checked by its content (identifier digits, numbers, yes/no).
HEADERS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {"identifier": ("Identifier",), "fullname": ("Full name",), "group": ("Group",), "grade": ("Grade",),
           "maximum": ("Maximum grade",), "scale": ("Scale",), "changeable": ("Grade can be changed",),
           "modified": ("Last modified (grade)",), "feedback": ("Feedback comments",)},
    "de": {"identifier": ("ID",),  # verified
           "fullname": ("Vollständiger Name",),  # unverified
           "group": ("Gruppe",),  # unverified
           "grade": ("Bewertung",),  # seen as 'grade' in German packs; core moodle.php itself not found
           "maximum": ("Bestwertung",),  # verified
           "scale": ("Skala",),  # unverified
           "changeable": ("Bewertung kann geändert werden",),  # verified
           "modified": ("Zuletzt geändert (Bewertung)",),  # verified
           "feedback": ("Feedback als Kommentar",)},  # unverified (used so by German feedback plugins)
    "fr": {"identifier": ("Identifiant",),  # verified
           "fullname": ("Nom complet",),  # unverified
           "group": ("Groupe",),  # verified
           "grade": ("Note",),  # unverified
           "maximum": ("Note maximale",),  # verified
           "scale": ("Barème",),  # unverified
           "changeable": ("La note peut être modifiée",),  # verified
           "modified": ("Dernière modification (note)",),  # verified
           "feedback": ("Feedback par commentaires",)},  # unverified
    "es": {"identifier": ("Identificador",),  # verified
           "fullname": ("Nombre completo",),  # unverified
           "group": ("Grupo",),  # unverified
           "grade": ("Calificación",),  # unverified
           "maximum": ("Calificación máxima",),  # verified
           "scale": ("Escala",),  # unverified
           "changeable": ("La calificación puede cambiarse",),  # verified
           "modified": ("Última modificación (calificación)",),  # verified
           "feedback": ("Comentarios de retroalimentación",)},  # unverified
    "fi": {"identifier": ("Tunniste",), "fullname": ("Koko nimi",), "group": ("Ryhmä",),  # all fi unverified
           "grade": ("Arvosana",), "maximum": ("Maksimiarvosana", "Enimmäisarvosana"), "scale": ("Asteikko",),
           "changeable": ("Arvosanaa voi muuttaa",), "modified": ("Viimeksi muokattu (arvosana)",),
           "feedback": ("Palautekommentit",)},
    "sv": {"identifier": ("Identifierare",),  # verified
           "fullname": ("Fullständigt namn",),  # unverified
           "group": ("Grupp",),  # verified
           "grade": ("Betyg",),  # unverified
           "maximum": ("Maximalt betyg",),  # verified
           "scale": ("Skala",),  # verified
           "changeable": ("Betyg kan ändras",),  # verified
           "modified": ("Senast modifierat (betyg)",),  # verified
           "feedback": ("Återkoppling som kommentarer",)},  # unverified
}
# get_string('no') in those languages (col_gradecanbechanged writes get_string('yes') or get_string('no')).
NO_WORDS = {"no", "nein", "non", "ei", "nej"}
YES_WORDS = {"yes", "ja", "oui", "sí", "si", "kyllä"}
KIT_BLOCK = re.compile(r'<div class="kit-grading">.*?</div>', re.S)  # the kit's own earlier feedback


class WorksheetError(KitError, ValueError):
    """A worksheet the kit cannot fill in as Moodle would import it (a ValueError too, as grading's were)."""


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def parse_columns(spec: str | None) -> dict[str, str]:
    """``--columns`` text to {role: header}.

    >>> parse_columns("identifier=Kennung, grade=Punkte")
    {'identifier': 'Kennung', 'grade': 'Punkte'}
    """
    if not spec:
        return {}
    mapping = {}
    for part in spec.split(","):
        role, _, header = part.partition("=")
        role = role.strip()
        if role not in ROLES or not header.strip():
            raise WorksheetError(f"--columns: {part.strip()!r} is not role=header.",
                                 fix=f"write e.g. --columns 'identifier=ID,grade=Note'; roles: {', '.join(ROLES)}")
        mapping[role] = header.strip()
    return mapping


def unformat_float(text: str, decsep: str) -> float | None:
    """The number Moodle's ``unformat_float`` reads (lib/moodlelib.php), or None for an empty cell.

    Moodle removes spaces, replaces the language's ``decsep`` with a point and casts with PHP's ``(float)``,
    which takes the longest number at the start: ``7,50`` with a point as ``decsep`` is 7.

    >>> unformat_float(" 10,00", ","), unformat_float("7,50", "."), unformat_float("", "."), unformat_float("x", ".")
    (10.0, 7.0, None, 0.0)
    """
    text = text.strip()
    if text == "":
        return None
    text = text.replace(" ", "").replace(decsep, ".")
    match = re.match(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", text)
    return float(match.group(0)) if match else 0.0


def decimal_separator(cells: list[str]) -> str:
    """',' when the worksheet's numbers are written with a decimal comma (``10,00``), else '.'.

    >>> decimal_separator(["10,00", ""]), decimal_separator(["10.00"]), decimal_separator([])
    (',', '.', '.')
    """
    for cell in cells:
        cell = cell.strip().replace(" ", "")
        if re.fullmatch(r"\d+,\d+", cell):
            return ","
        if re.fullmatch(r"\d+(\.\d+)?", cell):
            return "."
    return "."


def format_grade(value: float, decsep: str) -> str:
    """A grade as Moodle's ``format_float(grade, 2)`` writes it in the worksheet's language.

    >>> format_grade(7.5, ","), format_grade(3, ".")
    ('7,50', '3.00')
    """
    return f"{value:.2f}".replace(".", decsep)


def html_cell(html: str) -> str:
    """HTML for a worksheet cell with neither backslash nor quote: the same page, nothing PHP's fgetcsv misreads.

    A quote in text becomes ``&quot;`` and a backslash ``&#92;`` (the browser shows the same characters); the
    kit's own HTML has no attributes with quotes except :data:`KIT_BLOCK`'s, written after this.

    >>> html_cell('<p>C:\\\\temp\\\\"x"</p>')
    '<p>C:&#92;temp&#92;&quot;x&quot;</p>'
    """
    return html.replace("\\", "&#92;").replace('"', "&quot;")


def read_rows(text: str) -> list[list[str]]:
    r"""The rows Moodle's ``csv_import_reader::load_csv_content`` reads from a worksheet's text.

    Moodle strips a BOM, turns ``\r\n`` and ``\r`` into ``\n``, trims the text and reads it with PHP's
    ``fgetcsv`` (php-src ext/standard/file.c): in a quoted cell a backslash makes the next character ordinary
    and both stay; a quoted cell ends at a quote not followed by another and goes on over line ends; what
    follows its closing quote up to the comma is kept; blank lines are skipped.

    >>> read_rows('x,"say ""hi"" now"\n\n"two\nlines",e')
    [['x', 'say "hi" now'], ['two\nlines', 'e']]
    >>> read_rows('a,"C:\\x\\",b\n"c",d')  # the backslash keeps the cell open, over the line end
    [['a', 'C:\\x\\",b\nc"', 'd']]
    """
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").strip()
    rows: list[list[str]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == "\n":  # a blank line: fgetcsv gives [null], Moodle skips it
            i += 1
            continue
        row: list[str] = []
        while True:
            j = i
            while j < n and text[j] in " \t" and text[j] != ",":  # white space is skipped before a quote only
                j += 1
            cell = []
            if j < n and text[j] == '"':
                i, state = j + 1, 0
                while i < n:
                    ch = text[i]
                    if state == 1:  # escaped: ordinary, kept
                        state = 0
                    elif state == 2:
                        if ch != '"':
                            cell.pop()  # the closing quote
                            break
                        i += 1  # "" -> one quote
                        state = 0
                        continue
                    elif ch == '"':
                        state = 2
                    elif ch == "\\":
                        state = 1
                    cell.append(ch)
                    i += 1
                else:
                    if state == 2:
                        cell.pop()
                while i < n and text[i] not in ",\n":  # kept up to the delimiter
                    cell.append(text[i])
                    i += 1
            else:
                while i < n and text[i] not in ",\n":
                    cell.append(text[i])
                    i += 1
            row.append("".join(cell))
            if i < n and text[i] == ",":
                i += 1
                continue
            i += 1  # the line end
            break
        rows.append(row)
    return rows


def write_line(cells: list[str], newline: str = "\n") -> str:
    """One CSV line as PHP's ``fputcsv`` quotes it, but only where needed (a comma, quote or line end).

    A quote right after a backslash is not doubled, as ``fputcsv`` does: ``fgetcsv`` reads it back.
    """
    out = []
    for cell in cells:
        if any(c in cell for c in ',"\r\n'):
            quoted, escaped = ['"'], False
            for ch in cell:
                if ch == "\\":
                    escaped = True
                elif not escaped and ch == '"':
                    quoted.append('"')
                else:
                    escaped = False
                quoted.append(ch)
            out.append("".join(quoted) + '"')
        else:
            out.append(cell)
    return ",".join(out) + newline


# --- The download ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One file of the download: whose (``prefix``, ``number``), which plugin, its path below the owner."""
    prefix: str  # the full name, group name or "Participant" as Moodle wrote it ('_' replaced by ' ')
    number: str | None  # the unique id of a participant, or a group's id; None for the default group
    plugin: str  # 'file', 'onlinetext', ...
    path: str  # the file's path below the owner's folder (its name in a flat download)
    layout: str  # 'folders' (4.1+), 'folders-4.0' (up to 4.0), 'flat'

    @property
    def owner(self) -> str:
        """The prefix as in the download: the key the submissions are found under."""
        return self.prefix if self.number is None else f"{self.prefix}_{self.number}"


# The prefix never holds '_' (Moodle replaces it by a space), so the first '_<digits>_assign...' ends it.
_FOLDER = re.compile(r"^(?P<prefix>[^_/]*?)(?:_(?P<number>\d+))?_assignsubmission_(?P<plugin>[a-z0-9]+)(?P<old>_?)$")
_FLAT = re.compile(r"^(?P<prefix>[^_/]*?)(?:_(?P<number>\d+))?_assignsubmission_(?P<plugin>[a-z0-9]+)_(?P<file>.+)$")


def parse_path(path: str) -> Entry | None:
    """Whose file a path of the download is, in any of Moodle's layouts; None for anything else.

    >>> parse_path("Ann Lee_12_assignsubmission_file/sub/02_x.ipynb")
    Entry(prefix='Ann Lee', number='12', plugin='file', path='sub/02_x.ipynb', layout='folders')
    >>> parse_path("Ann Lee_12_assignsubmission_file_/02_x.ipynb").layout
    'folders-4.0'
    >>> parse_path("Ann Lee_12_assignsubmission_file_02_x.ipynb")
    Entry(prefix='Ann Lee', number='12', plugin='file', path='02_x.ipynb', layout='flat')
    >>> parse_path("Default group_assignsubmission_onlinetext/onlinetext.html").number is None
    True
    """
    parts = path.replace("\\", "/").strip("/").split("/")
    for index, part in enumerate(parts[:-1]):
        match = _FOLDER.match(part)
        if match:
            return Entry(match["prefix"], match["number"], match["plugin"], "/".join(parts[index + 1:]),
                         "folders-4.0" if match["old"] else "folders")
    match = _FLAT.match(parts[-1])
    if match:
        return Entry(match["prefix"], match["number"], match["plugin"], match["file"], "flat")
    return None


def load_teams(path: str | Path | None) -> dict[str, list[str]]:
    """A ``--teams`` file: JSON ``{"<group id>": ["Participant 12", ...]}``: whom a group's folder belongs to.

    Needed only where two groups share a name (the worksheet's Group column names the group, the folder its
    name and id) or the worksheet has no Group column.
    """
    if not path:
        return {}
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {str(group): [re.sub(r"\D", "", str(m)) for m in members] for group, members in data.items()}


# --- The worksheet ---------------------------------------------------------------------------------

def _clean_name(text: str) -> str:
    """A group's name as the download's prefix has it: '_' as a space, characters no file name takes removed."""
    return re.sub(r'[\x00-\x1f/\\:*?"<>|]', "", text.replace("_", " ")).strip()


@dataclass
class Worksheet:
    """A Moodle grading worksheet: header, rows, the roles of its columns, its number format and language."""
    header: list[str]
    rows: list[list[str]]
    roles: dict[str, int]
    decsep: str = "."
    language: str = ""
    encoding: str = "utf-8"
    newline: str = "\n"
    teams: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | Path, columns: dict[str, str] | None = None,
             teams: dict[str, list[str]] | None = None) -> Worksheet:
        """Read the CSV from Moodle's "Download grading worksheet"; ``columns``: {role: header} (``--columns``)."""
        raw = Path(path).read_bytes()
        encoding = "utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8"
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as err:
            raise WorksheetError(f"{path} is not UTF-8 ({err.reason} at byte {err.start}).",
                                 fix="download the worksheet from Moodle again and give that file, unchanged") from None
        sheet = cls.parse(text, columns, teams, where=str(path))
        sheet.encoding, sheet.newline = encoding, "\r\n" if "\r\n" in text else "\n"
        return sheet

    @classmethod
    def parse(cls, text: str, columns: dict[str, str] | None = None, teams: dict[str, list[str]] | None = None,
              where: str = "the worksheet") -> Worksheet:
        rows = read_rows(text)
        if not rows:
            raise WorksheetError(f"{where} is empty.", fix="download the grading worksheet from Moodle again")
        header, body = rows[0], rows[1:]
        roles, language = _find_roles(header, columns or {}, where)
        for number, row in enumerate(body, 2):
            if len(row) != len(header):  # Moodle refuses the whole file for one such row (csvweirdcolumns)
                raise WorksheetError(f"{where}, line {number}: {len(row)} cells where the header has {len(header)}.",
                                     fix="download the grading worksheet from Moodle again; do not edit it first")
        sheet = cls(header, body, roles, language=language, teams=teams or {})
        if "scale" in roles and "maximum" not in roles:
            raise WorksheetError(
                f"{where} is for an assignment graded with a scale (column {header[roles['scale']]!r}): Moodle "
                "imports a scale's words there, the kit gives points.",
                fix="in the assignment's settings set Grade > Type to Point with the maximum grade you want, "
                    "download the grading worksheet again and grade with that")
        bad = [row[roles["identifier"]] for row in body if not re.search(r"\d+\s*$", row[roles["identifier"]])]
        if bad:
            raise WorksheetError(f"{where}: column {header[roles['identifier']]!r} is not Moodle's Identifier "
                                 f"(no participant number in {bad[0]!r}).",
                                 fix="give --columns identifier=<the header of the column with 'Participant 12'>")
        numbers = [row[roles[r]] for r in ("maximum", "grade") if r in roles for row in body]
        sheet.decsep = decimal_separator(numbers)
        _check_content(sheet, columns or {}, where)
        return sheet

    # --- reading a row ---
    def identifier(self, row: list[str]) -> str:
        """The participant's number in this assignment (Moodle's unique id), from 'Participant 12'."""
        return re.search(r"(\d+)\s*$", row[self.roles["identifier"]]).group(1)

    def name(self, row: list[str]) -> str:
        return row[self.roles["fullname"]] if "fullname" in self.roles else row[self.roles["identifier"]]

    def maximum(self, row: list[str]) -> float | None:
        """The row's Maximum grade read as Moodle reads numbers; None without that column."""
        if "maximum" not in self.roles:
            return None
        cell = row[self.roles["maximum"]]
        value = unformat_float(cell, self.decsep)
        if value is None or not re.fullmatch(r"\d+([.,]\d+)?", cell.strip().replace(" ", "")):
            raise WorksheetError(f"Maximum grade {cell!r} of {row[self.roles['identifier']]} is not a number.",
                                 fix="download the grading worksheet from Moodle again")
        return value

    def changeable(self, row: list[str]) -> bool:
        """False where Moodle keeps the grade (locked, or not gradable: 'Grade can be changed' = No)."""
        return "changeable" not in self.roles or _norm(row[self.roles["changeable"]]) not in NO_WORDS

    def current_grade(self, row: list[str]) -> str:
        return row[self.roles["grade"]]

    # --- writing a row ---
    def set_grade(self, row: list[str], value: float) -> None:
        """Write a grade in the worksheet's number format, capped at its Maximum grade; a locked row stays."""
        if not self.changeable(row):
            return
        maximum = self.maximum(row)
        row[self.roles["grade"]] = format_grade(min(value, maximum) if maximum is not None else value, self.decsep)

    def add_feedback(self, row: list[str], html: str) -> None:
        """Append the kit's feedback to the row's comment (Moodle replaces the comment with the cell's text).

        The kit's block replaces the kit's block of an earlier run, so grading twice does not repeat it.
        """
        if "feedback" not in self.roles:
            return
        index = self.roles["feedback"]
        kept = KIT_BLOCK.sub("", row[index]).replace("\\", "&#92;")
        row[index] = kept + '<div class="kit-grading">' + html_cell(html) + "</div>"

    # --- teams ---
    def owners(self, found: dict[str, dict]) -> dict[str, str]:
        """{participant number: key of ``found``}: whose submission each row is graded from.

        ``found`` is keyed by :attr:`Entry.owner` and holds its Entry as ``"entry"``. A participant's folder
        (individual, blind marking, or up to 4.0 a team member's) maps by its number; a group's folder (4.1+)
        to every row whose Group cell is the group's name, or to the members ``--teams`` names for its id.
        A group's number is never taken for a participant's.
        """
        team = "group" in self.roles or bool(self.teams)
        numbers = {self.identifier(row): row for row in self.rows}
        owners: dict[str, str] = {}
        by_group: dict[str, list[str]] = {}
        if team:
            for number, row in numbers.items():
                by_group.setdefault(_clean_name(row[self.roles["group"]]), []).append(number)
        seen_names: dict[str, str] = {}
        for key, submission in found.items():
            entry: Entry = submission["entry"]
            row = numbers.get(entry.number or "")
            if not team:
                if row is not None:
                    owners[entry.number] = key
                continue
            if row is not None and entry.layout != "folders" and self._member_prefix(row, entry.prefix):
                owners[entry.number] = key  # up to 4.0: '<group>-<full name>_<member's id>'
                continue
            members = self.teams.get(entry.number or "")
            if members is None:
                if entry.prefix in seen_names and seen_names[entry.prefix] != entry.number:
                    raise WorksheetError(
                        f"Two groups are named {entry.prefix!r} (ids {seen_names[entry.prefix]} and {entry.number}): "
                        "the worksheet's Group column cannot tell their members apart.",
                        fix="give --teams teams.json naming each group's members: "
                            '{"<group id>": ["Participant 12", ...]} (README, Instructor guide)')
                seen_names[entry.prefix] = entry.number
                members = by_group.get(entry.prefix, [])
            for number in members:
                owners[number] = key
        return owners

    def _member_prefix(self, row: list[str], prefix: str) -> bool:
        """Whether ``prefix`` is the up-to-4.0 team prefix of this row: '<group>-<full name>' (or blind)."""
        group = _clean_name(row[self.roles["group"]]) if "group" in self.roles else ""
        if "fullname" in self.roles:
            return prefix == f"{group}-{_clean_name(row[self.roles['fullname']])}"
        return prefix.startswith(f"{group}-")

    # --- writing the file ---
    def text(self) -> str:
        """The worksheet as CSV that Moodle's csv_import_reader reads back cell for cell (checked here).

        Every cell the kit writes is safe (:func:`html_cell`, :func:`format_grade`); an untouched cell that
        PHP's fgetcsv cannot read back (a quoted cell ending in a backslash) stops the kit rather than let
        Moodle refuse the file or shift that row's cells.
        """
        rows = [self.header, *self.rows]
        text = "".join(write_line(row, self.newline) for row in rows)
        back = read_rows(text)
        for number, (row, read) in enumerate(zip(rows, back + [[]] * len(rows)), 1):
            if read != row:
                index = next((i for i, cell in enumerate(row) if i >= len(read) or read[i] != cell), 0)
                raise WorksheetError(
                    f"Line {number}, column {self.header[index]!r}: Moodle's CSV reader would read "
                    f"{row[index]!r} as something else (a backslash before a quote), and then refuse the file "
                    "or shift the row's cells.", fix="remove that backslash in Moodle (or in the worksheet), "
                    "download the worksheet again and grade with that")
        return text


def _check_content(sheet: Worksheet, columns: dict[str, str], where: str) -> None:
    """Stop where a column found by its header does not hold what Moodle writes there (gradingtable.php).

    Grade: a number or empty; Maximum grade: right after Grade; Grade can be changed: the language's yes or
    no. A header of one language that means something else in another is caught here, not graded into.
    """
    roles, header = sheet.roles, sheet.header
    fix = "name the columns with --columns (README, Instructor guide)"
    for row in sheet.rows:
        cell = row[roles["grade"]].strip().replace(" ", "")
        if cell not in ("", "-") and not re.fullmatch(r"\d+([.,]\d+)?", cell):
            raise WorksheetError(f"{where}: {cell!r} in column {header[roles['grade']]!r} is not a grade in points.",
                                 fix="a scale's word? grade with points (Grade > Type: Point); else " + fix)
        if "changeable" in roles and "changeable" not in columns and \
                _norm(row[roles["changeable"]]) not in NO_WORDS | YES_WORDS:
            raise WorksheetError(f"{where}: {row[roles['changeable']]!r} in column {header[roles['changeable']]!r} "
                                 "is not Moodle's yes or no.", fix=fix)
    if "maximum" in roles and not columns and roles["maximum"] != roles["grade"] + 1:
        raise WorksheetError(f"{where}: {header[roles['maximum']]!r} is not right after {header[roles['grade']]!r}, "
                             "where Moodle writes the maximum grade.", fix=fix)


def _find_roles(header: list[str], columns: dict[str, str], where: str) -> tuple[dict[str, int], str]:
    """{role: column index} and the language, from the header (and ``--columns``); stops when it cannot tell."""
    roles: dict[str, int] = {}
    votes: dict[str, int] = {}
    normalized = [_norm(cell) for cell in header]
    for role, name in columns.items():
        if _norm(name) not in normalized:
            raise WorksheetError(f"--columns {role}={name!r}: no such column in {where}; its columns are {header}.",
                                 fix="copy the header text exactly as the worksheet's first line has it")
        roles[role] = normalized.index(_norm(name))
    for language, names in HEADERS.items():
        for role, texts in names.items():
            for text in texts:
                if _norm(text) in normalized and role not in columns:
                    index = normalized.index(_norm(text))
                    # The same word for two roles in two languages (e.g. 'Skala') is fine; a header found
                    # for another role first is not taken twice.
                    if role not in roles and index not in roles.values():
                        roles[role] = index
                    votes[language] = votes.get(language, 0) + 1
    missing = [role for role in REQUIRED if role not in roles]
    if missing:
        raise WorksheetError(
            f"The columns of {where} are not in a language the kit knows (it knows {', '.join(HEADERS)}): "
            f"found {header}, missing {', '.join(missing)}.",
            fix="name them with --columns, e.g. --columns 'identifier=<header of the Participant column>,"
                "grade=<header of the Grade column>,modified=<Last modified (grade)>,maximum=<Maximum grade>,"
                "changeable=<Grade can be changed>,feedback=<Feedback comments>,group=<Group>'")
    return roles, max(votes, key=votes.get) if votes else ""

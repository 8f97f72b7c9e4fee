"""The kit's worksheet against a Python port of Moodle's own import (issue 24), and every download layout.

The port below follows Moodle's code part by part (each names its source): PHP's ``fgetcsv`` and ``fputcsv``
(php-src ext/standard/file.c, with the backslash escape Moodle leaves on), ``csv_import_reader``
(lib/csvlib.class.php), ``assignfeedback_offline_grade_importer`` (mod/assign/feedback/offline/importgradeslib.php),
``unformat_float`` (lib/moodlelib.php) and ``assign_feedback_offline::process_import_grades``
(mod/assign/feedback/offline/locallib.php). A worksheet passes when the port imports every row as meant.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest

from course import moodle
from course.grading import find_submissions
from course.moodle import Worksheet, WorksheetError, parse_columns, parse_path

# --- The port ---------------------------------------------------------------------------------------


class MoodleRejects(Exception):
    """Moodle refuses the whole upload (the reason is the language string it shows)."""


def php_fgetcsv(stream: io.StringIO, delimiter=",", enclosure='"', escape="\\"):
    """php-src ext/standard/file.c ``php_fgetcsv`` (one-byte characters: the worksheet's ASCII syntax).

    Returns False at the end, ``[None]`` for a blank line, else the cells. Inside a quoted cell the escape
    character makes the next character ordinary *and both stay in the cell*; a quoted cell ends at a quote
    not followed by a quote; what follows it up to the delimiter is appended; a quoted cell goes on over line
    ends, reading further lines.
    """
    buf = stream.readline()
    if buf == "":
        return False

    def trailing(text: str) -> int:  # php_fgetcsv_lookup_trailing_spaces: one \n, \r\n or \r
        if text.endswith("\r\n"):
            return len(text) - 2
        return len(text) - 1 if text.endswith(("\n", "\r")) else len(text)

    limit = trailing(buf)
    line_end = buf[limit:]
    bptr, cells, first = 0, [], True
    while True:
        inc = 1 if bptr < limit else 0
        if inc:  # 1. leading white space is skipped only before an enclosure
            tmp = bptr
            while tmp < limit and buf[tmp] != delimiter and buf[tmp].isspace():
                tmp += 1
            if tmp < limit and buf[tmp] == enclosure:
                bptr = tmp
        if first and bptr == limit:
            return [None]
        first = False
        out = []
        if inc and buf[bptr] == enclosure:  # 2A. an enclosed cell
            state, bptr = 0, bptr + 1
            hunk = bptr
            while True:
                inc = 1 if bptr < limit else 0
                if inc == 0:
                    if state == 2:
                        out.append(buf[hunk:bptr - 1])
                        hunk = bptr
                        break
                    out.append(buf[hunk:bptr])
                    out.append(line_end)  # the embedded line end belongs to the cell
                    new = stream.readline()
                    if new == "":  # unterminated enclosure: the rest is the last cell
                        hunk = bptr = limit
                        break
                    buf, bptr, hunk = new, 0, 0
                    limit = trailing(buf)
                    line_end = buf[limit:]
                    state = 0
                    continue
                if state == 1:  # escaped: this character is ordinary
                    bptr += 1
                    state = 0
                elif state == 2:
                    if buf[bptr] != enclosure:  # the real end of the enclosure
                        out.append(buf[hunk:bptr - 1])
                        hunk = bptr
                        break
                    out.append(buf[hunk:bptr])  # "" -> one quote
                    bptr += 1
                    hunk = bptr
                    state = 0
                else:
                    if buf[bptr] == enclosure:
                        state = 2
                    elif escape and buf[bptr] == escape:
                        state = 1
                    bptr += 1
            while bptr < limit and buf[bptr] != delimiter:  # up to the delimiter, kept
                bptr += 1
            out.append(buf[hunk:bptr])
            inc = 1 if bptr < limit else 0
            bptr += inc
        else:  # 2B. a plain cell
            hunk = bptr
            while bptr < limit and buf[bptr] != delimiter:
                bptr += 1
            out.append(buf[hunk:bptr])
            inc = 1 if bptr < limit else 0
            bptr += inc
        cells.append("".join(out))
        if inc == 0:
            return cells


def php_fputcsv(cells, delimiter=",", enclosure='"', escape="\\", eol="\n") -> str:
    """php-src ext/standard/file.c ``php_fputcsv``: a quote after the escape character is not doubled."""
    line = []
    for cell in cells:
        cell = "" if cell is None else str(cell)
        if any(c in cell for c in (delimiter, enclosure, escape, "\n", "\r", "\t", " ")):
            out, escaped = [enclosure], False
            for ch in cell:
                if ch == escape:
                    escaped = True
                elif not escaped and ch == enclosure:
                    out.append(enclosure)
                else:
                    escaped = False
                out.append(ch)
            line.append("".join(out) + enclosure)
        else:
            line.append(cell)
    return delimiter.join(line) + eol


def load_csv_content(content: str) -> list[list[str]]:
    """lib/csvlib.class.php ``csv_import_reader::load_csv_content`` then ``init()``/``next()``: the rows as read."""
    content = content.removeprefix("\ufeff")  # core_text::trim_utf8_bom
    content = content.replace("\r\n", "\n").replace("\r", "\n").strip()  # preg_replace('!\r\n?!') and trim()
    stream, rows = io.StringIO(content), []
    while (cells := php_fgetcsv(stream)) is not False:
        if cells != [None]:  # "Check to see if we have an empty line."
            rows.append(cells)
    if not rows:
        raise MoodleRejects("csvemptyfile")
    for cells in rows:
        if len(cells) != len(rows[0]):
            raise MoodleRejects("csvweirdcolumns")
    # Stored with csv_export_writer::print_array (fputcsv), read back with fgetcsv by init() and next().
    stored = io.StringIO("".join(php_fputcsv(cells) for cells in rows))
    again = []
    while (cells := php_fgetcsv(stored)) is not False:
        again.append(cells)
    return again


# Language strings the importer compares with (get_string in the uploader's language).
STRINGS = {
    "en": {"recordid": "Identifier", "grade": "Grade", "lastmodifiedgrade": "Last modified (grade)",
           "hiddenuser": "Participant ", "comments": "Feedback comments", "decsep": "."},
    "de": {"recordid": "ID", "grade": "Bewertung", "lastmodifiedgrade": "Zuletzt geändert (Bewertung)",
           "hiddenuser": "Teilnehmer/in", "comments": "Feedback als Kommentar", "decsep": ","},
    "fr": {"recordid": "Identifiant", "grade": "Note", "lastmodifiedgrade": "Dernière modification (note)",
           "hiddenuser": "Participant ", "comments": "Feedback par commentaires", "decsep": ","},
}


def unformat_float(text, decsep):
    """lib/moodlelib.php ``unformat_float``: trim, '' -> null, spaces out, decsep -> '.', PHP's (float)."""
    if text is None:
        return None
    text = str(text).strip()
    if text == "":
        return None
    text = text.replace(" ", "").replace(decsep, ".")
    number = re.match(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", text)  # PHP's (float): the number at the start
    return float(number.group(0)) if number else 0.0


def strtotime(text: str) -> int:
    """PHP's strtotime for the one format the tests write ('Monday, 30 November 2026, 10:00 AM'); else false (0)."""
    try:
        return int(datetime.strptime(text, "%A, %d %B %Y, %I:%M %p").replace(tzinfo=timezone.utc).timestamp())
    except ValueError:
        return 0


@dataclass
class Grade:  # an assign_grades row and its feedback comment
    grade: float | None = None
    timemodified: int = 0
    comment: str = ""


@dataclass
class Assignment:
    """What process_import_grades reads of Moodle's state."""
    lang: str = "en"
    maxgrade: float = 10.0  # the instance's grade; negative: a scale's id
    scale: list[str] = field(default_factory=list)
    uniqueids: dict[str, int] = field(default_factory=dict)  # assign_user_mapping: uniqueid -> user id
    grades: dict[int, Grade] = field(default_factory=dict)
    locked: set[int] = field(default_factory=set)  # grading_disabled()
    feedback_enabled: bool = True


def import_grades(content: str, assign: Assignment, ignoremodified: bool = False) -> tuple[int, int]:
    """``process_import_grades`` with its importer; updates ``assign``; returns (grades, feedbacks) updated."""
    strings = STRINGS[assign.lang]
    rows = load_csv_content(content)
    columns = rows[0]
    # importgradeslib.php init(): exact matches of the language strings.
    feedback_index = columns.index(strings["comments"]) if assign.feedback_enabled and \
        strings["comments"] in columns else None
    indexes = {key: columns.index(strings[key]) if strings[key] in columns else -1
               for key in ("recordid", "grade", "lastmodifiedgrade")}
    if min(indexes.values()) < 0:
        raise MoodleRejects("invalidgradeimport")
    updated_grades = updated_feedback = 0
    for record in rows[1:]:
        # importgradeslib.php next(): substr($idstr, strlen(get_string('hiddenuser', 'assign'))) (bytes).
        idstr = record[indexes["recordid"]].encode()[len(strings["hiddenuser"].encode()):].decode()
        userid = assign.uniqueids.get(idstr)  # get_user_id_for_uniqueid($id)
        if userid is None:
            continue
        value = record[indexes["grade"]]
        modified = strtotime(record[indexes["lastmodifiedgrade"]])
        usergrade = assign.grades.get(userid)
        if assign.maxgrade < 0:  # a scale: the word's index, '' when it is none of the scale's words
            grade = assign.scale.index(value) + 1 if value in assign.scale else ""
        else:
            grade = unformat_float(value, strings["decsep"])
        stale = bool(usergrade and usergrade.timemodified > modified + 60)
        # The skip chain, in Moodle's order.
        if usergrade and usergrade.grade == grade:
            skip = True  # grade not modified
        elif grade is None or grade == "" or grade < 0:
            skip = True  # no value
        elif not ignoremodified and stale:
            skip = True  # modified in Moodle since
        elif userid in assign.locked:
            skip = True  # locked
        elif assign.maxgrade > -1 and (grade < 0 or grade > assign.maxgrade):
            skip = True  # out of range
        else:
            skip = False
        if not skip:
            assign.grades.setdefault(userid, Grade()).grade = grade
            updated_grades += 1
        if (ignoremodified or not stale) and feedback_index:  # importgradeslib: !empty($details['index'])
            new = record[feedback_index]
            if new != (usergrade.comment if usergrade else ""):
                assign.grades.setdefault(userid, Grade()).comment = new  # set_editor_text: replaced
                updated_feedback += 1
    return updated_grades, updated_feedback


# --- Worksheets as Moodle writes them --------------------------------------------------------------

EN = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum grade", "Grade can be changed",
      "Last modified (submission)", "Last modified (grade)", "Feedback comments"]
DE = ["ID", "Vollständiger Name", "E-Mail-Adresse", "Status", "Bewertung", "Bestwertung",
      "Bewertung kann geändert werden", "Zuletzt geändert (Abgabe)", "Zuletzt geändert (Bewertung)",
      "Feedback als Kommentar"]
FR = ["Identifiant", "Nom complet", "Adresse de courriel", "Statut", "Note", "Note maximale",
      "La note peut être modifiée", "Dernière modification (travail remis)", "Dernière modification (note)",
      "Feedback par commentaires"]
WHEN = "Monday, 30 November 2026, 10:00 AM"
BACKSLASH_QUOTE = 'FileNotFoundError: "C:\\Users\\ann\\"'  # a Windows path ending in a backslash, quoted


def moodle_csv(header, rows) -> str:
    """A worksheet as Moodle's table download writes it (fputcsv with its escape rule)."""
    return "".join(php_fputcsv(cells) for cells in [header, *rows])


def graded(text: str, grades: dict[str, float], feedback: dict[str, str], **read) -> str:
    """What course.grading does with a worksheet: each row's grade and feedback, then the file's text."""
    sheet = Worksheet.parse(text, **read)
    for row in sheet.rows:
        number = sheet.identifier(row)
        if number in grades:
            sheet.set_grade(row, grades[number])
        sheet.add_feedback(row, feedback.get(number, "<p>No notebook found in this submission.</p>"))
    return sheet.text()


# --- The port is Moodle: it can fail ---------------------------------------------------------------

def test_port_reads_like_php():
    def read(text):
        return php_fgetcsv(io.StringIO(text))

    assert read('"a""b",c\n') == ['a"b', "c"]
    assert read('"a\\"b",c\n') == ['a\\"b', "c"]  # the backslash stays, the quote does not end the cell
    assert read('"ab"cd,e\n') == ["abcd", "e"]
    assert read('"two\nlines",x\n') == ["two\nlines", "x"]
    assert read("\n") == [None] and read("") is False
    assert php_fputcsv(['say "hi"', "C:\\x\\", "plain"]) == '"say ""hi""","C:\\x\\",plain\n'
    assert unformat_float("7,50", ".") == 7.0 and unformat_float("7,50", ",") == 7.5 and unformat_float("", ",") is None


def test_port_rejects_a_naive_csv_with_backslash_quote():
    """What the kit wrote before: Python's csv is right by its rules, Moodle's fgetcsv reads another row."""
    rows = [["Participant 12", "Ann", "", "", "3.00", "10.00", "Yes", "-", "-", BACKSLASH_QUOTE],
            ["Participant 13", "Bob", "", "", "2.00", "10.00", "Yes", "-", "-", 'ok, "fine"']]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([EN, *rows])
    assert list(csv.reader(io.StringIO(buffer.getvalue()))) == [EN, *rows]  # Python reads it back
    with pytest.raises(MoodleRejects, match="csvweirdcolumns"):
        import_grades(buffer.getvalue(), Assignment(uniqueids={"12": 1, "13": 2}))


# --- The kit's worksheet passes the port -----------------------------------------------------------

def test_english_worksheet_imports_every_row_as_meant():
    text = moodle_csv(EN, [
        ["Participant 12", "Ann Lee", "ann@x", "Submitted", "", "10.00", "Yes", WHEN, "-", ""],
        ["Participant 13", "Bob Kim", "bob@x", "Submitted", "", "10.00", "Yes", WHEN, "-", "<p>See me.</p>"],
        ["Participant 14", "Cara Ng", "cara@x", "Submitted", "7.00", "10.00", "No", WHEN, WHEN, "<p>Done</p>"],
        ["Participant 15", "Dan Oh", "dan@x", "No submission", "", "10.00", "Yes", "-", "-", ""],
    ])
    out = graded(text, {"12": 3, "13": 12.5, "14": 2},
                 {"12": "<p>Grade: 3</p>", "13": "<p>Grade: 10</p>", "14": "<p>Points from the checks: 2.</p>"})
    assign = Assignment(uniqueids={"12": 1, "13": 2, "14": 3, "15": 4},
                        grades={3: Grade(7.0, strtotime(WHEN), "<p>Done</p>")}, locked={3})
    assert import_grades(out, assign) == (2, 4)
    assert assign.grades[1].grade == 3.0 and assign.grades[2].grade == 10.0  # 12.5 capped at the maximum
    assert assign.grades[3].grade == 7.0  # locked: stays
    assert assign.grades[2].comment == '<p>See me.</p><div class="kit-grading"><p>Grade: 10</p></div>'  # appended
    locked = assign.grades[3].comment
    assert locked.startswith("<p>Done</p>") and "Points from the checks: 2." in locked
    assert assign.grades[4].grade is None and "No notebook" in assign.grades[4].comment
    # Graded again from the downloaded worksheet after that import: the kit's block is replaced, not repeated.
    again = Worksheet.parse(out)
    again.add_feedback(again.rows[1], "<p>Grade: 9</p>")
    assert again.rows[1][9] == '<p>See me.</p><div class="kit-grading"><p>Grade: 9</p></div>'


def test_german_worksheet_with_decimal_comma():
    text = moodle_csv(DE, [
        ["Teilnehmer/in12", "Ann Lee", "ann@x", "Eingereicht", "", "10,00", "Ja", WHEN, "-", ""],
        ["Teilnehmer/in13", "Bob Kim", "bob@x", "Eingereicht", "", "10,00", "Nein", WHEN, "-", ""],
    ])
    sheet = Worksheet.parse(text)
    assert (sheet.language, sheet.decsep, sheet.maximum(sheet.rows[0])) == ("de", ",", 10.0)
    out = graded(text, {"12": 7.5, "13": 4}, {"12": "<p>Grade: 7.5</p>", "13": "<p>x</p>"})
    assert out.splitlines()[1].split(",")[4:6] == ['"7', '50"']  # written as Moodle writes it there: "7,50"
    assign = Assignment(lang="de", uniqueids={"12": 1, "13": 2})
    assert import_grades(out, assign) == (1, 2)
    assert assign.grades[1].grade == 7.5 and assign.grades[2].grade is None  # 'Nein': not gradable, untouched
    # A point there would have been read as 7 by an English Moodle: the format follows the worksheet.
    assert unformat_float("7,50", ".") == 7.0


def test_comma_decimal_worksheet_in_french_caps_at_its_maximum():
    text = moodle_csv(FR, [["Participant 3", "Éve Roy", "e@x", "Remis", "", "5,00", "Oui", WHEN, "-", ""]])
    out = graded(text, {"3": 8}, {"3": "<p>Note : 8</p>"})
    assign = Assignment(lang="fr", maxgrade=5.0, uniqueids={"3": 9})
    assert import_grades(out, assign) == (1, 1) and assign.grades[9].grade == 5.0


def test_feedback_with_a_backslash_before_a_quote_imports_whole():
    text = moodle_csv(EN, [["Participant 12", "Ann Lee", "a@x", "", "", "10.00", "Yes", WHEN, "-", ""],
                           ["Participant 13", "Bob Kim", "b@x", "", "", "10.00", "Yes", WHEN, "-", ""]])
    why = html.escape(BACKSLASH_QUOTE, quote=False)
    out = graded(text, {"12": 1, "13": 2}, {"12": f"<p>{why}</p>", "13": "<p>ok</p>"})
    assert '\\"' not in out and "\\" not in out
    assign = Assignment(uniqueids={"12": 1, "13": 2})
    assert import_grades(out, assign) == (2, 2)
    comment = assign.grades[1].comment
    assert html.unescape(comment.split('"kit-grading">')[1]) == f"<p>{BACKSLASH_QUOTE}</p></div>"  # shown as was
    assert assign.grades[2].grade == 2.0


def test_an_existing_comment_with_backslash_quote_stays_as_moodle_reads_it():
    """Moodle wrote it (fputcsv: the quote after the backslash not doubled); the kit reads and keeps it as is."""
    old = 'Path: "C:\\temp\\" and more'
    text = moodle_csv(EN, [["Participant 1", "Ann", "", "", "", "10.00", "Yes", WHEN, "-", old]])
    sheet = Worksheet.parse(text)
    assert sheet.rows[0][9] == load_csv_content(text)[1][9]  # the kit sees the cell Moodle sees
    sheet.add_feedback(sheet.rows[0], "<p>Grade: 1</p>")
    assign = Assignment(uniqueids={"1": 5})
    import_grades(sheet.text(), assign)
    assert html.unescape(assign.grades[5].comment).startswith(load_csv_content(text)[1][9])


def test_an_untouched_cell_moodle_would_misread_stops_the_kit():
    sheet = Worksheet.parse(moodle_csv(EN, [["Participant 1", "Ann", "", "", "", "10.00", "Yes", "", "", ""]]))
    sheet.rows[0][1] = "Lee, Ann\\"  # quoted for its comma; fgetcsv takes the closing quote for an escaped one
    with pytest.raises(WorksheetError, match="Full name"):
        sheet.text()


def test_team_assignment_every_member_gets_the_groups_grade(tmp_path):
    """4.1+: one folder per group, named with the group's id (7), which is also Dan's participant number."""
    header = EN[:4] + ["Group"] + EN[4:]
    rows = [["Participant 12", "Ann Lee", "", "", "Team A", "", "10.00", "Yes", WHEN, "-", ""],
            ["Participant 13", "Bob Kim", "", "", "Team A", "", "10.00", "Yes", WHEN, "-", ""],
            ["Participant 7", "Dan Oh", "", "", "Team B", "", "10.00", "Yes", WHEN, "-", ""],
            ["Participant 8", "Eve Roy", "", "", "Default group", "", "10.00", "Yes", WHEN, "-", ""]]
    download = tmp_path / "download.zip"
    with zipfile.ZipFile(download, "w") as archive:
        archive.writestr("Team A_7_assignsubmission_file/01_test.ipynb", b"{}")
        archive.writestr("Team A_7_assignsubmission_onlinetext/onlinetext.html", b"<p>hi</p>")
        archive.writestr("Default group_assignsubmission_file/01_test.ipynb", b"{}")
    sheet = Worksheet.parse(moodle_csv(header, rows))
    owners = sheet.owners(find_submissions(download))
    assert owners == {"12": "Team A_7", "13": "Team A_7", "8": "Default group"}  # never Dan: 7 is a group
    grades = {number: 4 for number in owners}
    out = graded(moodle_csv(header, rows), grades, {n: "<p>Grade: 4</p>" for n in owners})
    assign = Assignment(uniqueids={"12": 1, "13": 2, "7": 3, "8": 4})
    import_grades(out, assign)
    assert {user: g.grade for user, g in assign.grades.items()} == {1: 4.0, 2: 4.0, 3: None, 4: 4.0}


def test_teams_up_to_40_and_groups_of_one_name(tmp_path):
    header = EN[:4] + ["Group"] + EN[4:]
    rows = [["Participant 12", "Ann Lee", "", "", "Team A", "", "10.00", "Yes", "", "", ""],
            ["Participant 13", "Bob Kim", "", "", "Team A", "", "10.00", "Yes", "", "", ""]]
    download = tmp_path / "old.zip"
    with zipfile.ZipFile(download, "w") as archive:  # up to 4.0: a folder per member, the member's id
        archive.writestr("Team A-Ann Lee_12_assignsubmission_file_/01_test.ipynb", b"{}")
        archive.writestr("Team A-Bob Kim_13_assignsubmission_file_/01_test.ipynb", b"{}")
    sheet = Worksheet.parse(moodle_csv(header, rows))
    assert sheet.owners(find_submissions(download)) == {"12": "Team A-Ann Lee_12", "13": "Team A-Bob Kim_13"}
    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(twice, "w") as archive:  # two groups named "Team A": the worksheet cannot tell
        archive.writestr("Team A_7_assignsubmission_file/01_test.ipynb", b"{}")
        archive.writestr("Team A_9_assignsubmission_file/01_test.ipynb", b"{}")
    with pytest.raises(WorksheetError, match="--teams"):
        sheet.owners(find_submissions(twice))
    teams = tmp_path / "teams.json"
    teams.write_text(json.dumps({"7": ["Participant 12"], "9": ["Participant 13"]}))
    named = Worksheet.parse(moodle_csv(header, rows), teams=moodle.load_teams(teams))
    assert named.owners(find_submissions(twice)) == {"12": "Team A_7", "13": "Team A_9"}


# --- The download's layouts ------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "owner", "file", "layout"), [
    ("Ann Lee_12_assignsubmission_file/01_test.ipynb", "Ann Lee_12", "01_test.ipynb", "folders"),
    ("Ann Lee_42_assignsubmission_file_02_text_generation.ipynb", "Ann Lee_42", "02_text_generation.ipynb", "flat"),
    ("Ann Lee_12_assignsubmission_file_/01_test.ipynb", "Ann Lee_12", "01_test.ipynb", "folders-4.0"),
    ("Participant_12_assignsubmission_file/01_test.ipynb", "Participant_12", "01_test.ipynb", "folders"),
    ("Ann Lee_12_assignsubmission_onlinetext/onlinetext.html", "Ann Lee_12", "onlinetext.html", "folders"),
])
def test_every_layout(path, owner, file, layout):
    entry = parse_path(path)
    assert (entry.owner, entry.path, entry.layout) == (owner, file, layout)


def test_flat_download_with_a_two_digit_id_and_online_text(tmp_path):
    download = tmp_path / "flat.zip"
    with zipfile.ZipFile(download, "w") as archive:
        archive.writestr("Ann Lee_42_assignsubmission_file_02_text_generation.ipynb", b"{}")
        archive.writestr("Ann Lee_42_assignsubmission_onlinetext_onlinetext.html", b"<p>notes</p>")
        archive.writestr("Participant_43_assignsubmission_file_01_test.ipynb", b"{}")  # blind marking
    found = find_submissions(download)
    assert list(found["Ann Lee_42"]["notebooks"]) == ["02_text_generation.ipynb"]
    assert list(found["Participant_43"]["notebooks"]) == ["01_test.ipynb"]  # file names: content says which notebook
    sheet = Worksheet.parse(moodle_csv(EN, [["Participant 42", "Ann Lee"] + [""] * 3 + ["10.00", "Yes", "", "", ""],
                                            ["Participant 43", "x"] + [""] * 3 + ["10.00", "Yes", "", "", ""]]))
    assert sheet.owners(found) == {"42": "Ann Lee_42", "43": "Participant_43"}


# --- Headers, languages, scales --------------------------------------------------------------------

def test_unknown_language_stops_with_the_headers_and_the_option():
    header = ["Kennung", "Name", "Punkte", "Höchstpunkte", "Änderbar", "Geändert", "Kommentar"]
    text = moodle_csv(header, [["Teilnehmer 5", "Ann", "", "10,00", "Ja", "-", ""]])
    with pytest.raises(WorksheetError) as err:
        Worksheet.parse(text)
    assert "Kennung" in str(err.value) and "--columns" in str(err.value)
    columns = parse_columns("identifier=Kennung,grade=Punkte,maximum=Höchstpunkte,changeable=Änderbar,"
                            "modified=Geändert,feedback=Kommentar")
    sheet = Worksheet.parse(text, columns=columns)
    sheet.set_grade(sheet.rows[0], 12)
    assert sheet.rows[0][2] == "10,00"
    with pytest.raises(WorksheetError, match="roles"):
        parse_columns("points=Punkte")


@pytest.mark.parametrize("header", [
    ["Identificador", "Nombre completo", "Estado", "Calificación", "Calificación máxima",
     "La calificación puede cambiarse", "Última modificación (calificación)", "Comentarios de retroalimentación"],
    ["Identifierare", "Fullständigt namn", "Status", "Betyg", "Maximalt betyg", "Betyg kan ändras",
     "Senast modifierat (betyg)", "Återkoppling som kommentarer"],
    ["Tunniste", "Koko nimi", "Tila", "Arvosana", "Maksimiarvosana", "Arvosanaa voi muuttaa",
     "Viimeksi muokattu (arvosana)", "Palautekommentit"],
])
def test_spanish_swedish_finnish_headers(header):
    sheet = Worksheet.parse(moodle_csv(header, [["x 1", "Ann", "", "", "10,00", "Sí", "-", ""]]))
    assert {role: sheet.roles[role] for role in ("identifier", "grade", "maximum", "feedback")} == {
        "identifier": 0, "grade": 3, "maximum": 4, "feedback": 7}


def test_scale_graded_assignment_is_refused_with_the_fix():
    header = EN[:5] + ["Scale"] + EN[6:]
    with pytest.raises(WorksheetError, match="Type to Point"):
        Worksheet.parse(moodle_csv(header, [["Participant 1", "Ann", "", "", "", "Bad\nGood", "Yes", "", "", ""]]))


def test_a_column_that_does_not_hold_what_moodle_writes_there_stops():
    with pytest.raises(WorksheetError, match="not a grade in points"):
        Worksheet.parse(moodle_csv(EN, [["Participant 1", "Ann", "", "", "Good", "10.00", "Yes", "", "", ""]]))
    with pytest.raises(WorksheetError, match="yes or no"):
        Worksheet.parse(moodle_csv(EN, [["Participant 1", "Ann", "", "", "", "10.00", "Maybe", "", "", ""]]))


def test_command_line_columns_option(tmp_path, capsys):
    from course.__main__ import main

    sheet = tmp_path / "w.csv"
    sheet.write_text(moodle_csv(["Kennung", "Punkte", "Geändert"], [["Teilnehmer 5", "", "-"]]), encoding="utf-8")
    download = tmp_path / "d.zip"
    with zipfile.ZipFile(download, "w") as archive:
        archive.writestr("x.txt", b"")
    args = ["grade", "--submissions", str(download), "--worksheet", str(sheet), "--out", str(tmp_path / "out")]
    assert main(args) == 1 and "--columns" in capsys.readouterr().out
    assert main([*args, "--columns", "identifier=Kennung,grade=Punkte,modified=Geändert"]) == 0
    assert "Teilnehmer 5" in (tmp_path / "out" / "w_graded.csv").read_text(encoding="utf-8")

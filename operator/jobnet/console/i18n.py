"""Labels of the console in English and Japanese, chosen by the browser's ``Accept-Language``.

Pure: a header in, a language and a lookup function out. State and phase names stay as the API
spells them (people search logs and ``kubectl`` output for them); a translated label is shown
next to them.
"""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("en", "ja")

LABELS: dict[str, dict[str, str]] = {
    "title": {"en": "jobnet console", "ja": "jobnet コンソール"},
    "runs": {"en": "Run list", "ja": "実行一覧"},
    "monitor": {"en": "Job network monitor", "ja": "ジョブネットモニタ"},
    "job_monitor": {"en": "Job monitor", "ja": "ジョブモニタ"},
    "events": {"en": "Event list", "ja": "イベント一覧"},
    "jobnet_view": {"en": "JobNet", "ja": "ジョブネット定義"},
    "namespace": {"en": "Namespace", "ja": "ネームスペース"},
    "jobnet": {"en": "JobNet", "ja": "ジョブネット"},
    "run": {"en": "Run", "ja": "実行"},
    "phase": {"en": "Phase", "ja": "状態"},
    "state": {"en": "State", "ja": "状態"},
    "progress": {"en": "Progress", "ja": "進捗"},
    "start": {"en": "Start", "ja": "開始"},
    "end": {"en": "End", "ja": "終了"},
    "duration": {"en": "Duration", "ja": "所要時間"},
    "search": {"en": "Search", "ja": "検索"},
    "filter": {"en": "Filter", "ja": "絞り込み"},
    "all": {"en": "all", "ja": "すべて"},
    "start_run": {"en": "Start a run", "ja": "実行を開始"},
    "env": {"en": "Environment (KEY=VALUE, one a line)", "ja": "環境変数 (KEY=VALUE を 1 行に 1 つ)"},
    "no_runs": {"en": "No runs.", "ja": "実行はありません。"},
    "stuck_mark": {"en": "needs a person", "ja": "要対応"},
    "path": {"en": "Path", "ja": "パス"},
    "attempt": {"en": "Attempt", "ja": "試行"},
    "attempts": {"en": "Attempts", "ja": "試行履歴"},
    "attempts_dropped": {
        "en": "{count} earlier attempt(s) no longer kept",
        "ja": "それ以前の {count} 回の試行は保存されていません",
    },
    "host": {"en": "Host", "ja": "ホスト"},
    "pid": {"en": "PID", "ja": "PID"},
    "exit_code": {"en": "Exit code", "ja": "終了コード"},
    "reason": {"en": "Reason", "ja": "理由"},
    "message": {"en": "Message", "ja": "メッセージ"},
    "output": {"en": "Output (tail)", "ja": "出力 (末尾)"},
    "full_output": {"en": "Full output from the VM", "ja": "VM 上の全出力"},
    "earlier_output": {"en": "Load earlier output", "ja": "それ以前の出力を読み込む"},
    "output_following": {"en": "following the job's output…", "ja": "ジョブの出力を追跡中…"},
    "output_ended": {"en": "the job ended: this is all of its output", "ja": "ジョブは終了しました: これが全出力です"},
    "output_lost": {
        "en": "the output stream was interrupted: choose stdout or stderr again",
        "ja": "出力の受信が中断しました: stdout か stderr をもう一度選んでください",
    },
    "overrides": {"en": "Overrides and stops", "ja": "状態変更と停止"},
    "by": {"en": "By", "ja": "実行者"},
    "at": {"en": "At", "ja": "日時"},
    "environment": {"en": "Environment it got", "ja": "ジョブの環境変数"},
    "change_state": {"en": "Change state", "ja": "状態を変更"},
    "no_change": {
        "en": "No change is allowed from this state.",
        "ja": "この状態からは変更できません。",
    },
    "set_to": {"en": "Set to", "ja": "変更:"},
    "stop": {"en": "Stop", "ja": "停止"},
    "stop_run": {"en": "Stop the whole run", "ja": "実行全体を停止"},
    "confirm": {"en": "Confirm", "ja": "確認"},
    "cancel": {"en": "Cancel", "ja": "キャンセル"},
    "optional_message": {"en": "Message (optional)", "ja": "メッセージ (任意)"},
    "type": {"en": "Type", "ja": "種別"},
    "count": {"en": "Count", "ja": "回数"},
    "last_seen": {"en": "Last seen", "ja": "最終発生"},
    "job": {"en": "Job", "ja": "ジョブ"},
    "no_events": {"en": "No events.", "ja": "イベントはありません。"},
    "expand": {"en": "expand", "ja": "展開"},
    "collapse": {"en": "collapse", "ja": "折りたたみ"},
    "finally": {"en": "finally", "ja": "終了処理"},
    "jobs": {"en": "Jobs", "ja": "ジョブ"},
    "graph_too_large": {
        "en": "Too many nodes to draw at once ({count}); expand fewer sub-jobnets or use the list below.",
        "ja": "一度に描画するにはノードが多すぎます ({count})。展開を減らすか下の一覧を使ってください。",
    },
    "problems": {"en": "Validation problems", "ja": "検証エラー"},
    "valid": {"en": "Valid", "ja": "正常"},
    "schedules": {"en": "Next scheduled", "ja": "次回予定"},
    "schedule": {"en": "Schedule", "ja": "スケジュール"},
    "last_run": {"en": "Last run", "ja": "前回の実行"},
    "suspended": {"en": "suspended", "ja": "停止中"},
    "live": {"en": "live", "ja": "ライブ"},
    "disconnected": {"en": "reconnecting…", "ja": "再接続中…"},
    "requested": {"en": "Requested.", "ja": "要求しました。"},
}


def choose_language(accept_language: str | None) -> str:
    """The first of :data:`LANGUAGES` the header prefers (by q-value, then order); English otherwise."""
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate((accept_language or "").split(",")):
        tag, _, parameters = item.strip().partition(";")
        quality = 1.0
        if parameters.strip().startswith("q="):
            try:
                quality = float(parameters.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, index, primary))
    return min(ranked)[2] if ranked else "en"


def translator(language: str) -> Callable[[str], str]:
    """``t(key)``: the label in ``language`` (English when missing); an unknown key is a KeyError."""

    def translate(key: str) -> str:
        entry = LABELS[key]
        return entry.get(language) or entry["en"]

    return translate

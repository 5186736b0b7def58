//! The rotation calendar: what is overdue, what comes due month by month, a three-month
//! grid, and the credentials without a schedule. A view of `GET /v1/rotation`.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde_json::{json, Value};

use super::pages::{need, Ctx};
use super::render;
use crate::state::AppState;

/// How far ahead the calendar looks (the API's maximum).
const HORIZON_DAYS: i64 = 3650;

fn due_date(item: &Value) -> Option<NaiveDate> {
    item["next_due_at"]
        .as_str()
        .and_then(|t| t.parse::<DateTime<Utc>>().ok())
        .map(|t| t.date_naive())
}

fn first_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

fn next_month(d: NaiveDate) -> NaiveDate {
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(d)
}

/// Month grids (weeks from Monday) from `today`'s month, with the items due on each day.
fn grids(items: &[Value], today: NaiveDate, months: usize) -> Vec<Value> {
    let mut out = vec![];
    let mut first = first_of_month(today);
    for _ in 0..months {
        let next = next_month(first);
        let mut weeks: Vec<Vec<Value>> = vec![];
        let mut week: Vec<Value> =
            vec![Value::Null; first.weekday().num_days_from_monday() as usize];
        let mut d = first;
        while d < next {
            let due: Vec<Value> = items
                .iter()
                .filter(|i| due_date(i) == Some(d))
                .map(
                    |i| json!({"label": i["label"], "id": i["credential_id"], "state": i["state"]}),
                )
                .collect();
            week.push(
                json!({"day": d.day(), "date": d.to_string(), "today": d == today, "due": due}),
            );
            if week.len() == 7 {
                weeks.push(std::mem::take(&mut week));
            }
            d += Duration::days(1);
        }
        if !week.is_empty() {
            week.resize(7, Value::Null);
            weeks.push(week);
        }
        out.push(json!({"title": first.format("%B %Y").to_string(), "weeks": weeks}));
        first = next;
    }
    out
}

pub async fn calendar(State(s): State<AppState>, c: Ctx) -> Response {
    let sess = match need(&s, &c).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let due = c
        .get(
            &s,
            &sess,
            &format!("/v1/rotation?within_days={HORIZON_DAYS}&limit=200"),
        )
        .await;
    let items = due.items();
    let creds = c.get(&s, &sess, "/v1/credentials?limit=200").await.items();
    let today = Utc::now().date_naive();
    let overdue: Vec<&Value> = items.iter().filter(|i| i["state"] == "overdue").collect();
    // Upcoming, grouped by month (the API returns them soonest first).
    let mut months: Vec<Value> = vec![];
    for i in items.iter().filter(|i| i["state"] != "overdue") {
        let Some(d) = due_date(i) else { continue };
        let title = d.format("%B %Y").to_string();
        let row = json!({"label": i["label"], "id": i["credential_id"], "exchange": i["exchange"],
                         "date": d.to_string(), "days": i["days_until_due"], "interval": i["interval_days"]});
        match months.last_mut() {
            Some(m) if m["title"] == title.as_str() => {
                if let Some(a) = m["items"].as_array_mut() {
                    a.push(row)
                }
            }
            _ => months.push(json!({"title": title, "items": [row]})),
        }
    }
    let unscheduled: Vec<&Value> = creds
        .iter()
        .filter(|cr| {
            !matches!(
                cr["status"].as_str(),
                Some("shredded" | "revoked" | "expired")
            )
        })
        .filter(|cr| !items.iter().any(|i| i["credential_id"] == cr["id"]))
        .collect();
    render(
        "rotation.html",
        &sess,
        json!({
            "overdue": overdue, "months": months, "unscheduled": unscheduled,
            "grids": grids(&items, today, 3),
            "error": (!due.ok()).then(|| due.message()),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_weeks_start_on_monday_and_mark_due_days() {
        // 2026-12-01 is a Tuesday.
        let today = NaiveDate::from_ymd_opt(2026, 12, 15).unwrap();
        let items = vec![
            json!({"credential_id": "c1", "label": "k", "state": "due_soon",
                                "next_due_at": "2026-12-24T00:00:00Z"}),
        ];
        let g = grids(&items, today, 2);
        assert_eq!(g[0]["title"], "December 2026");
        let weeks = g[0]["weeks"].as_array().unwrap();
        assert!(weeks[0][0].is_null());
        assert_eq!(weeks[0][1]["day"], 1);
        assert!(weeks.iter().all(|w| w.as_array().unwrap().len() == 7));
        let due: Vec<&Value> = weeks
            .iter()
            .flat_map(|w| w.as_array().unwrap())
            .filter(|d| d["due"].as_array().is_some_and(|a| !a.is_empty()))
            .collect();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0]["day"], 24);
        assert_eq!(g[1]["title"], "January 2027");
    }
}

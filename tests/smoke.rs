mod common;

use common::*;

#[tokio::test]
async fn racy_writers_make_duplicates_that_scan_counts() {
    let t = TestDb::new("smoke_race").await;
    t.insert(&[empty_job("race-1", 20)]).await;
    let files: Vec<String> = (0..20).map(|i| format!("/data/in/f{i:03}.jpg")).collect();
    let pushed = race(&t.jobs, "race-1", &files, 8).await;
    assert!(
        pushed > 20,
        "the race should record some files twice, pushed {pushed}"
    );

    let args = [
        vec!["scan".to_string()],
        t.flags(),
        vec!["--all".into(), "--format".into(), "json".into()],
    ];
    let out = dupcheck(args.concat());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let job = &v["jobs"][0];
    assert_eq!(job["counts"]["results"], pushed);
    assert_eq!(job["counts"]["extra_entries"], pushed - 20);
    assert_eq!(code(&out), 1);
}

//! Unit tests of the screening: normalisation, the scored cases from the screening
//! specification, determinism and the properties of the name score.

use super::*;
use proptest::prelude::*;

const SIMPLE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/sanctions/sanctions_simple.csv"
));
const SDN: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/sanctions/sdn_sample.csv"
));
const DEFAULT: ScreeningSettings = ScreeningSettings {
    threshold: 0.88,
    candidate_floor: 0.80,
};
const ALL: ScreeningSettings = ScreeningSettings {
    threshold: 0.88,
    candidate_floor: 0.0,
};

fn index(list: &[u8]) -> ScreeningIndex {
    ScreeningIndex::new(parse_list(list).unwrap())
}
fn who<'a>(name: &'a str, dob: Option<NaiveDate>, country: Option<&'a str>) -> Subject<'a> {
    let (full_name, date_of_birth) = (name, dob);
    Subject {
        full_name,
        date_of_birth,
        country,
    }
}
fn date(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d)
}
/// Best match (with `settings`); asserts it is entry `reference`, prints it.
fn top(list: &[u8], s: Subject<'_>, settings: ScreeningSettings, reference: &str) -> Match {
    let index = index(list);
    let found = index.screen(&s, &settings, 5);
    let m = found.first().cloned().expect("a match");
    assert_eq!(index.entries()[m.entry_index].reference, reference);
    let (name, score) = (m.name_score, m.score);
    println!(
        "{:<32} name {name:.4} score {score:.4} {:?}",
        s.full_name, m.reasons
    );
    m
}
fn best(list: &[u8], name: &str, reference: &str) -> Match {
    top(list, who(name, None, None), DEFAULT, reference)
}
fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 5e-5, "{actual} vs {expected}");
}

#[test]
fn normalisation_folds_accents_case_titles_and_punctuation() {
    assert_eq!(normalise_name("José Müller"), ["jose", "muller"]);
    let folded = normalise_name("Dr. Jürgen GROSS-Øster, Straße Łukasz Þór");
    assert_eq!(
        folded,
        ["jurgen", "gross", "oster", "strasse", "lukasz", "thor"]
    );
    assert_eq!(
        normalise_name("AL-MANSOURI, Abdul"),
        ["al", "mansouri", "abdul"]
    );
    assert!(normalise_name(" -- Mr. ").is_empty());
}

#[test]
fn case1_exact_name_is_strong() {
    let m = best(SIMPLE, "Viktor Aleksandrovich Kovalenko", "1");
    assert_eq!((m.name_score, m.score), (1.0, 1.0));
    let defaults = ScreeningSettings::default();
    assert_eq!((defaults.threshold, defaults.candidate_floor), (0.88, 0.80));
    assert!(is_strong(&m, &defaults));
    assert_eq!(m.reasons, ["name 1.000 (exact token match)"]);
}

#[test]
fn case2_reordered_name_is_strong() {
    let m = best(SIMPLE, "KOVALENKO Viktor Aleksandrovich", "1");
    assert_eq!(m.score, 1.0);
    let m = best(SDN, "Viktor Aleksandrovich Kovalenko", "9101");
    assert_eq!(m.matched_name, "KOVALENKO, Viktor Aleksandrovich");
    assert_eq!(m.score, 1.0);
}

#[test]
fn case3_accents_and_case_do_not_matter() {
    assert_eq!(best(SIMPLE, "Jose Maria Ibarra Gomez", "2").score, 1.0);
    assert_eq!(best(SDN, "josé maría ibarra-gómez", "9104").score, 1.0);
}

#[test]
fn case4_typos_are_strong() {
    let kovalenkko = best(SIMPLE, "Viktor Kovalenkko", "1");
    assert_close(kovalenkko.score, 0.9339);
    let ibara = best(SIMPLE, "Jose Maria Ibara Gomez", "2");
    assert_close(ibara.score, 0.9900);
    assert!(is_strong(&kovalenkko, &DEFAULT) && is_strong(&ibara, &DEFAULT));
}

#[test]
fn case5_initials_are_reported() {
    // kovalenko 1.0 (weight 9), v~viktor and a~aleksandrovich 0.90 (weight 1
    // each), all tokens paired: (9 + 0.9 + 0.9) / 11 = 0.9818, strong as well.
    let m = best(SIMPLE, "V. A. Kovalenko", "1");
    assert_close(m.score, 0.9818);
    let pairs = "kovalenko~kovalenko 1.000, a~aleksandrovich 0.900, v~viktor 0.900";
    assert_eq!(
        m.reasons[1],
        format!("token pairs: {pairs} (3 subject vs 3 list tokens)")
    );
    // One initial: (9 + 0.9) / 10 * (4/5)^0.25 = 0.9363.
    assert_close(best(SIMPLE, "V. Kovalenko", "1").score, 0.9363);
    // Initials only: every pair 0.90, so 0.90, strong under the rules as given.
    assert_close(best(SIMPLE, "V. A. K.", "1").score, 0.9);
}

#[test]
fn case6_unrelated_names_do_not_match() {
    let names = [
        "Emma Johnson",
        "Peter Schmidt",
        "Maria Gonzalez",
        "Ivan Petrov",
    ];
    for (name, list) in names.iter().flat_map(|n| [(n, SIMPLE), (n, SDN)]) {
        let found = index(list).screen(&who(name, None, None), &DEFAULT, 10);
        assert!(found.is_empty(), "{name}: {found:?}");
    }
}

#[test]
fn case7_date_of_birth_and_country_adjust_the_score() {
    let typo = |dob| who("Viktor Kovalenkko", dob, None);
    let none = top(SIMPLE, typo(None), DEFAULT, "1").score;
    let same = top(SIMPLE, typo(date(1965, 1, 12)), DEFAULT, "1").score;
    let other = top(SIMPLE, typo(date(1980, 3, 4)), ALL, "1");
    assert!(same > none && none > other.score);
    assert_close(same, 0.9339 + 0.05);
    assert_close(other.score, 0.9339 - 0.15);
    let differs = "date of birth differs (list 1965-01-12 vs subject 1980-03-04)";
    assert_eq!(other.reasons[2], differs);
    // 0.7839 is below the default floor: with a different DOB it is not reported.
    let subject = typo(date(1980, 3, 4));
    assert!(index(SIMPLE).screen(&subject, &DEFAULT, 5).is_empty());
    // A perfect name cannot rise above 1.0, so a DOB match adds nothing there.
    let exact = who("Viktor Aleksandrovich Kovalenko", date(1965, 1, 12), None);
    assert_eq!(top(SIMPLE, exact, DEFAULT, "1").score, 1.0);
    // Year-only list DOB and country (entry 3: 1970, SY).
    let mansouri = |dob, country| who("Abdul Rahman Mansouri", dob, Some(country));
    let hit = top(SIMPLE, mansouri(date(1970, 6, 1), "sy"), ALL, "3");
    assert_close(hit.score, (hit.name_score + 0.02 + 0.03).min(1.0));
    assert_eq!(
        hit.reasons[2..],
        ["year of birth matches (1970)", "country matches (SY)"]
    );
    let miss = top(SIMPLE, mansouri(date(1981, 6, 1), "DE"), ALL, "3");
    assert_close(miss.score - miss.name_score, -0.15 - 0.05);
    assert_eq!(miss.reasons[3], "country differs (list SY vs subject DE)");
}

#[test]
fn case8_aliases_match_like_names() {
    let m = best(SIMPLE, "Abu Samir al-Qudayri", "3");
    assert_eq!(
        (m.matched_name.as_str(), m.score),
        ("Abu Samir Al-Qudayri", 1.0)
    );
    let alias = "exact token match on alias \"Abu Samir Al-Qudayri\"";
    assert_eq!(m.reasons[0], format!("name 1.000 ({alias})"));
    let m = best(SDN, "Abd al Rahman Mansouri", "9103");
    assert_eq!(
        (m.matched_name.as_str(), m.score),
        ("MANSOURI, Abd al-Rahman", 1.0)
    );
    let alias_typo = best(SDN, "Abd al Rahman Mansuri", "9103");
    let name_typo = best(SDN, "Abdul Rahman Al Mansuri", "9103");
    // Both typos are close to their name; 0.9909 (alias) and 0.9917 (primary).
    assert_close(alias_typo.score, 0.9909);
    assert_close(name_typo.score, 0.9917);
    assert_eq!(name_typo.matched_name, "AL-MANSOURI, Abdul Rahman");
}

#[test]
fn vessels_are_not_screened() {
    // "VIKTOR KOVALENKO" is also a vessel (9106); only the person is reported.
    let index = index(SDN);
    let found = index.screen(&who("Viktor Kovalenko", None, None), &ALL, 10);
    let refs: Vec<&str> = found
        .iter()
        .map(|m| index.entries()[m.entry_index].reference.as_str())
        .collect();
    assert_eq!(refs[0], "9101");
    assert!(!refs.contains(&"9106"));
}

#[test]
fn case11_deterministic_and_sorted() {
    let index = index(SIMPLE);
    let subject = who("Kovalenko Zhang Ibarra", None, None);
    let first = index.screen(&subject, &ALL, 100);
    assert_eq!(first.len(), 8);
    assert_eq!(first, index.screen(&subject, &ALL, 100));
    let key = |m: &Match| (std::cmp::Reverse(m.score.to_bits()), m.entry_index);
    assert!(first.windows(2).all(|w| key(&w[0]) < key(&w[1])));
    assert_eq!(index.screen(&subject, &ALL, 3), first[..3]);
    assert!(index.screen(&subject, &ALL, 0).is_empty());
    assert!(index.screen(&who("Mr.", None, None), &ALL, 10).is_empty());
}

fn name_score(a: &str, b: &str) -> f64 {
    let (a, b) = (PreparedName::new(a), PreparedName::new(b));
    compare_names(&a, &b, &mut Scratch::default()).0
}

proptest! {
    #[test]
    fn scores_are_bounded_and_exact_names_score_one(
        name in "[A-Za-zÀ-ÿ.'-]{1,10}( [A-Za-zÀ-ÿ.'-]{1,10}){0,3}",
        other in "[A-Za-z -]{0,30}",
        year in 1900i32..2010,
    ) {
        prop_assume!(!normalise_name(&name).is_empty());
        let entry = |name: &str| ListEntry {
            reference: "1".into(),
            name: name.into(),
            aliases: vec![],
            date_of_birth: Some(BirthDate::Year(year)),
            country: Some("IR".into()),
            program: None,
            kind: "individual".into(),
        };
        let index = ScreeningIndex::new(vec![entry(&other), entry(&name)]);
        let found = index.screen(&who(&name, date(1950, 1, 1), Some("IR")), &ALL, 10);
        for m in &found {
            prop_assert!((0.0..=1.0).contains(&m.score));
            prop_assert!((0.0..=1.0).contains(&m.name_score));
        }
        let own = found.iter().find(|m| m.entry_index == 1);
        prop_assert_eq!(own.map(|m| m.name_score), Some(1.0));
    }

    #[test]
    fn name_score_is_symmetric_and_order_free(
        a in "[a-z]{1,8}( [a-z]{1,8}){0,3}",
        b in "[a-z]{1,8}( [a-z]{1,8}){0,3}",
    ) {
        // A name made only of titles ("mr", "dr") has no tokens left to compare.
        prop_assume!(!normalise_name(&a).is_empty() && !normalise_name(&b).is_empty());
        let ab = name_score(&a, &b);
        prop_assert!((0.0..=1.0).contains(&ab));
        prop_assert_eq!(ab, name_score(&b, &a));
        let reversed: Vec<&str> = a.split(' ').rev().collect();
        prop_assert_eq!(ab, name_score(&reversed.join(" "), &b));
        prop_assert_eq!(name_score(&a, &a), 1.0);
    }
}

//! `lifeboat cost`: what the backups cost. Bytes and objects per
//! repository (the primary and each replica) and storage class, from
//! listings; a monthly figure from a price table (AWS S3 list prices by
//! default, overridable in `[cost]`); what a full restore from each
//! repository costs in requests and retrieval, per tier for the classes
//! that must be thawed; and what the strategy's plain `pg_dump | gzip` of
//! every backup kept would store, from the backups' own sizes.

use std::collections::BTreeMap;

use lifeboat_repo::{FileType, Repository};
use lifeboat_storage::DynStorage;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Session};

/// Where the default prices come from, and when they were taken.
pub const PRICES_SOURCE: &str = "AWS S3 list prices, us-east-1 (https://aws.amazon.com/s3/pricing/), as published in 2025; set [cost.price.CLASS] to use yours";

/// The prices of one storage class, in US dollars.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassPrice {
    /// Storage, per GB (10⁹ bytes) and month.
    pub storage_gb_month: f64,
    /// PUT (and COPY, POST, LIST) requests, per 1000.
    pub put_per_1000: f64,
    /// GET requests, per 1000.
    pub get_per_1000: f64,
    /// Retrieval, per GB read (the infrequent-access classes).
    #[serde(default)]
    pub retrieval_gb: f64,
    /// Restore (thaw) from a cold class, per GB, by tier: bulk, standard,
    /// expedited (absent: the tier does not exist for the class).
    #[serde(default)]
    pub thaw_gb: BTreeMap<String, f64>,
    /// Restore requests, per 1000, by tier.
    #[serde(default)]
    pub thaw_per_1000: BTreeMap<String, f64>,
    /// Bytes billed per object beyond its size at this class's rate (S3
    /// Glacier classes: 32 KiB of index per object).
    #[serde(default)]
    pub overhead_bytes: u64,
    /// Bytes billed per object at the STANDARD rate (Glacier classes: 8
    /// KiB of metadata per object).
    #[serde(default)]
    pub standard_overhead_bytes: u64,
    /// The minimum days an object is billed for (deleted earlier, the rest
    /// is charged).
    #[serde(default)]
    pub minimum_days: u32,
}

fn tiers(v: &[(&str, f64)]) -> BTreeMap<String, f64> {
    v.iter().map(|(k, p)| (k.to_string(), *p)).collect()
}

/// The default price table: AWS S3 list prices in us-east-1 (see
/// [`PRICES_SOURCE`]).
pub fn default_prices() -> BTreeMap<String, ClassPrice> {
    let p = |storage, put, get, retrieval, min| ClassPrice {
        storage_gb_month: storage,
        put_per_1000: put,
        get_per_1000: get,
        retrieval_gb: retrieval,
        minimum_days: min,
        ..ClassPrice::default()
    };
    let mut m = BTreeMap::new();
    m.insert("STANDARD".into(), p(0.023, 0.005, 0.0004, 0.0, 0));
    m.insert("STANDARD_IA".into(), p(0.0125, 0.01, 0.001, 0.01, 30));
    m.insert("ONEZONE_IA".into(), p(0.01, 0.01, 0.001, 0.01, 30));
    m.insert(
        "INTELLIGENT_TIERING".into(),
        p(0.023, 0.005, 0.0004, 0.0, 0),
    );
    m.insert("GLACIER_IR".into(), p(0.004, 0.02, 0.01, 0.03, 90));
    m.insert(
        "GLACIER".into(),
        ClassPrice {
            thaw_gb: tiers(&[("bulk", 0.0), ("standard", 0.01), ("expedited", 0.03)]),
            thaw_per_1000: tiers(&[("bulk", 0.025), ("standard", 0.05), ("expedited", 10.0)]),
            overhead_bytes: 32 << 10,
            standard_overhead_bytes: 8 << 10,
            ..p(0.0036, 0.03, 0.0004, 0.0, 90)
        },
    );
    m.insert(
        "DEEP_ARCHIVE".into(),
        ClassPrice {
            thaw_gb: tiers(&[("bulk", 0.0025), ("standard", 0.02)]),
            thaw_per_1000: tiers(&[("bulk", 0.025), ("standard", 0.10)]),
            overhead_bytes: 32 << 10,
            standard_overhead_bytes: 8 << 10,
            ..p(0.00099, 0.05, 0.0004, 0.0, 180)
        },
    );
    m
}

/// `[cost]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostSection {
    /// A name for the price table in reports (`my contract, 2026-03`).
    pub prices_source: Option<String>,
    /// Per storage class, prices that replace the defaults' (every field of
    /// the class must be given).
    #[serde(default)]
    pub price: BTreeMap<String, ClassPrice>,
    /// Per GB that leaves the region in a restore (to the internet or
    /// another region): 0 when restores run in the region.
    pub transfer_out_gb: Option<f64>,
}

const GB: f64 = 1e9;

/// Bytes and objects of one storage class in one repository.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClassUse {
    /// The storage class.
    pub class: String,
    /// Objects.
    pub objects: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Its monthly storage cost (overheads included).
    pub monthly: f64,
}

/// What a full restore — every object of the repository read once — costs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreCost {
    /// The thaw tier (`none` for classes that read at once).
    pub tier: String,
    /// Request charges (GETs, restore requests).
    pub requests: f64,
    /// Retrieval and restore charges per GB, and transfer out.
    pub retrieval: f64,
    /// Both.
    pub total: f64,
}

/// One repository's use and costs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepoCost {
    /// `default` for the primary, else the replica's name.
    pub name: String,
    /// Where it lives.
    pub location: String,
    /// Per storage class.
    pub classes: Vec<ClassUse>,
    /// Bytes, all classes.
    pub bytes: u64,
    /// Objects, all classes.
    pub objects: u64,
    /// Monthly storage cost, all classes.
    pub monthly: f64,
    /// A full restore's cost, per tier.
    pub full_restore: Vec<RestoreCost>,
    /// Why it could not be measured (a replica that does not answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The strategy's baseline: a plain compressed full copy of every backup
/// kept.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Baseline {
    /// Backups kept (snapshots in the repository).
    pub backups: u64,
    /// Their sizes added up, uncompressed (what full copies hold).
    pub logical_bytes: u64,
    /// That, compressed as well as lifeboat compressed the unique data
    /// (`pg_dump | gzip` stand-in; gzip -6 and zstd -1 are close on dumps).
    pub compressed_bytes: u64,
    /// Its monthly cost in STANDARD.
    pub monthly: f64,
    /// What the primary repository stores instead.
    pub lifeboat_bytes: u64,
    /// `compressed_bytes / lifeboat_bytes`.
    pub ratio: f64,
    /// Dollars a month saved on the primary.
    pub monthly_saving: f64,
}

/// `lifeboat cost`'s report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CostReport {
    /// Where the prices come from.
    pub prices_source: String,
    /// The primary, then each replica.
    pub repositories: Vec<RepoCost>,
    /// Monthly, every repository.
    pub monthly_total: f64,
    /// The plain-dump comparison.
    pub baseline: Baseline,
}

/// The storage class of each kind of object in a repository whose data
/// (packs, WAL) is written in `data_class`.
fn class_of(key: &str, data_class: &str) -> String {
    if key.starts_with(FileType::Pack.prefix()) || key.starts_with(FileType::Named.prefix()) {
        data_class.to_string()
    } else {
        "STANDARD".into()
    }
}

fn price<'a>(prices: &'a BTreeMap<String, ClassPrice>, class: &str) -> Result<&'a ClassPrice> {
    prices.get(class).ok_or_else(|| {
        Error::usage(format!(
            "no price for the storage class {class:?}: add [cost.price.{class}] to the config file"
        ))
    })
}

/// Use and cost of the repository in `storage`, whose data is in
/// `data_class`.
fn repo_cost(
    session: &Session,
    name: &str,
    storage: &DynStorage,
    data_class: &str,
    prices: &BTreeMap<String, ClassPrice>,
    transfer_out_gb: f64,
) -> Result<RepoCost> {
    let listed = session.handle().block_on(storage.list(""))?;
    let mut by_class: BTreeMap<String, ClassUse> = BTreeMap::new();
    for o in &listed {
        let class = class_of(&o.key, data_class);
        let c = by_class.entry(class.clone()).or_insert_with(|| ClassUse {
            class,
            ..ClassUse::default()
        });
        c.objects += 1;
        c.bytes += o.size;
    }
    let standard = price(prices, "STANDARD")?.storage_gb_month;
    let mut out = RepoCost {
        name: name.to_string(),
        location: storage.location(),
        ..RepoCost::default()
    };
    for c in by_class.values_mut() {
        let p = price(prices, &c.class)?;
        c.monthly = (c.bytes + c.objects * p.overhead_bytes) as f64 / GB * p.storage_gb_month
            + (c.objects * p.standard_overhead_bytes) as f64 / GB * standard;
        out.bytes += c.bytes;
        out.objects += c.objects;
        out.monthly += c.monthly;
    }
    // A full restore: every object read once; the cold ones thawed first,
    // at each tier their class offers.
    let mut tiers_seen: Vec<String> = Vec::new();
    for c in by_class.values() {
        for t in price(prices, &c.class)?.thaw_gb.keys() {
            if !tiers_seen.contains(t) {
                tiers_seen.push(t.clone());
            }
        }
    }
    tiers_seen.sort_by_key(|t| match t.as_str() {
        "bulk" => 0,
        "standard" => 1,
        _ => 2,
    });
    if tiers_seen.is_empty() {
        tiers_seen.push("none".into());
    }
    for tier in tiers_seen {
        let mut r = RestoreCost {
            tier: tier.clone(),
            ..RestoreCost::default()
        };
        let mut possible = true;
        for c in by_class.values() {
            let p = price(prices, &c.class)?;
            let gb = c.bytes as f64 / GB;
            r.requests += c.objects as f64 / 1000.0 * p.get_per_1000;
            r.retrieval += gb * (p.retrieval_gb + transfer_out_gb);
            if !p.thaw_gb.is_empty() {
                match (p.thaw_gb.get(&tier), p.thaw_per_1000.get(&tier)) {
                    (Some(g), Some(q)) => {
                        r.retrieval += gb * g;
                        r.requests += c.objects as f64 / 1000.0 * q;
                    }
                    _ => possible = false,
                }
            }
        }
        if possible {
            r.total = r.requests + r.retrieval;
            out.full_restore.push(r);
        }
    }
    out.classes = by_class.into_values().collect();
    Ok(out)
}

/// `lifeboat cost`.
pub fn cost(session: &Session, repo: &Repository) -> Result<CostReport> {
    let section = &session.file.cost;
    let mut prices = default_prices();
    for (class, p) in &section.price {
        prices.insert(class.clone(), p.clone());
    }
    let transfer = section.transfer_out_gb.unwrap_or(0.0);
    let mut report = CostReport {
        prices_source: section
            .prices_source
            .clone()
            .unwrap_or_else(|| PRICES_SOURCE.to_string()),
        ..CostReport::default()
    };
    report.repositories.push(repo_cost(
        session,
        "default",
        repo.storage(),
        "STANDARD",
        &prices,
        transfer,
    )?);
    let primary = session.repo_url().ok();
    for r in session.file.replicas(&[], primary.as_deref())? {
        let class = r.storage_class.clone().unwrap_or_else(|| "STANDARD".into());
        // A replica that does not answer is reported as such; the others
        // are still measured (the command then fails: the total lacks it).
        let measured = session
            .replica_storage(r)
            .and_then(|storage| repo_cost(session, &r.name, &storage, &class, &prices, transfer));
        report.repositories.push(match measured {
            Ok(c) => c,
            Err(e) => RepoCost {
                name: r.name.clone(),
                location: r.repo.clone(),
                error: Some(lifeboat_repo::report(&e)),
                ..RepoCost::default()
            },
        });
    }
    report.monthly_total = report.repositories.iter().map(|r| r.monthly).sum();

    let stats = repo.stats(&lifeboat_repo::NoProgress)?;
    let ratio = if stats.raw_bytes > 0 {
        stats.stored_bytes as f64 / stats.raw_bytes as f64
    } else {
        1.0
    };
    let compressed = (stats.logical_bytes as f64 * ratio) as u64;
    let standard = price(&prices, "STANDARD")?.storage_gb_month;
    let lifeboat_bytes = report.repositories[0].bytes;
    report.baseline = Baseline {
        backups: stats.snapshots,
        logical_bytes: stats.logical_bytes,
        compressed_bytes: compressed,
        monthly: compressed as f64 / GB * standard,
        lifeboat_bytes,
        ratio: if lifeboat_bytes > 0 {
            compressed as f64 / lifeboat_bytes as f64
        } else {
            0.0
        },
        monthly_saving: (compressed as f64 - lifeboat_bytes as f64) / GB * standard,
    };
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_classes_bill_their_per_object_overhead_and_thaw_by_tier() {
        let prices = default_prices();
        let deep = &prices["DEEP_ARCHIVE"];
        assert_eq!(deep.overhead_bytes, 32 << 10);
        assert!(deep.thaw_gb.contains_key("bulk") && !deep.thaw_gb.contains_key("expedited"));
        assert!(prices["STANDARD"].thaw_gb.is_empty());
        assert_eq!(class_of("packs/ab/cd", "GLACIER"), "GLACIER");
        assert_eq!(class_of("named/ef", "GLACIER"), "GLACIER");
        assert_eq!(class_of("index/ab", "GLACIER"), "STANDARD");
        assert_eq!(class_of("snapshots/ab", "GLACIER"), "STANDARD");
        // Every class a replica may name has a price.
        for c in lifeboat_storage::STORAGE_CLASSES {
            assert!(prices.contains_key(*c), "{c}");
        }
    }
}

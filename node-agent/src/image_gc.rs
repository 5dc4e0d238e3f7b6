//! Image garbage collection, as kubelet's image GC manager does it.
//!
//! Every [`ImageGcPolicy::detect_period`] the collector lists the runtime's images and
//! containers and remembers, per image, when it first saw it and when a container (of any
//! state, the agent's or not) last used it. Every [`ImageGcPolicy::period`] it reads the image
//! filesystem's usage; at or above `high_threshold_percent` it removes unused images, least
//! recently used first (never-used before used, then the longest known), until the bytes freed
//! would bring usage down to `low_threshold_percent`. Images seen for less than `min_age`, CRI
//! `pinned` images and the runtime's sandbox (pause) image are never removed: containerd 1.6
//! does not pin its sandbox image, and no container lists it, so without that rule an idle node
//! would delete the image every pod needs. A high threshold of 100 disables the collector.
//!
//! Where the usage comes from is a [`FsUsage`]: [`CriFsUsage`] asks CRI `ImageFsInfo` for the
//! image filesystem's mountpoint and `statvfs`es it; tests give their own numbers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::cri::{api, cri_err, Cri};
use crate::Error;

/// Size and free space of the filesystem holding the images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsStats {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
}

/// Where the collector reads the image filesystem's usage.
pub trait FsUsage: Send + Sync {
    fn image_fs(&self) -> BoxFuture<'_, Result<FsStats, Error>>;
}

/// The real image filesystem: CRI `ImageFsInfo`'s mountpoint (containerd's snapshotter
/// directory), measured with `statvfs`.
pub struct CriFsUsage {
    cri: Cri,
}

impl CriFsUsage {
    pub fn new(cri: Cri) -> CriFsUsage {
        CriFsUsage { cri }
    }
}

impl FsUsage for CriFsUsage {
    fn image_fs(&self) -> BoxFuture<'_, Result<FsStats, Error>> {
        Box::pin(async move {
            let info = self
                .cri
                .images
                .clone()
                .image_fs_info(api::ImageFsInfoRequest {})
                .await
                .map_err(cri_err("ImageFsInfo"))?
                .into_inner();
            let mountpoint = info
                .image_filesystems
                .first()
                .and_then(|f| f.fs_id.as_ref())
                .map(|id| id.mountpoint.clone())
                .filter(|m| !m.is_empty())
                .ok_or_else(|| Error::Config("the runtime reported no image filesystem".into()))?;
            let st = rustix::fs::statvfs(mountpoint.as_str())
                .map_err(|e| std::io::Error::other(format!("statvfs {mountpoint}: {e}")))?;
            Ok(FsStats {
                capacity_bytes: st.f_blocks.saturating_mul(st.f_frsize),
                available_bytes: st.f_bavail.saturating_mul(st.f_frsize),
            })
        })
    }
}

/// kubelet's image GC settings; [`Default`] has kubelet 1.32's defaults.
#[derive(Clone, Debug)]
pub struct ImageGcPolicy {
    /// `--image-gc-high-threshold`: collect at or above this usage (percent); 100 disables.
    pub high_threshold_percent: u8,
    /// `--image-gc-low-threshold`: collect down to this usage (percent).
    pub low_threshold_percent: u8,
    /// `--minimum-image-ttl-duration`: an image this agent has known for less is kept.
    pub min_age: Duration,
    /// How often usage is checked (kubelet: 5 min).
    pub period: Duration,
    /// How often images in use are noted (kubelet: 30 s); the LRU order's resolution.
    pub detect_period: Duration,
    /// The runtime's sandbox image, kept whatever the runtime reports (see the module docs).
    pub sandbox_image: String,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
            period: Duration::from_secs(300),
            detect_period: Duration::from_secs(30),
            sandbox_image: crate::images::PAUSE_IMAGE.to_string(),
        }
    }
}

impl ImageGcPolicy {
    /// kubelet's validation: both thresholds in 0..=100, low strictly below high.
    pub fn validate(&self) -> Result<(), Error> {
        let (high, low) = (self.high_threshold_percent, self.low_threshold_percent);
        if high > 100 || low > 100 {
            return Err(Error::Config(format!(
                "--image-gc-high-threshold ({high}) and --image-gc-low-threshold ({low}) must be between 0 and 100"
            )));
        }
        if low >= high {
            return Err(Error::Config(format!(
                "--image-gc-low-threshold ({low}) must be less than --image-gc-high-threshold ({high})"
            )));
        }
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.high_threshold_percent < 100
    }
}

/// What one collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Usage (percent) when the check ran.
    pub usage_percent: u64,
    /// Bytes to free to reach the low threshold (0 below the high threshold).
    pub bytes_to_free: u64,
    pub bytes_freed: u64,
    /// Removed images, by their first tag (or id when untagged).
    pub removed: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
struct Record {
    first_detected: Instant,
    /// The last detection that found a container using it; `None`: never seen in use.
    last_used: Option<Instant>,
}

/// The image garbage collector of one node.
pub struct ImageGc {
    cri: Cri,
    policy: ImageGcPolicy,
    usage: Arc<dyn FsUsage>,
    records: Mutex<HashMap<String, Record>>,
}

/// One image as the collector sees it.
struct Image {
    id: String,
    name: String,
    names: Vec<String>,
    size: u64,
    pinned: bool,
}

impl ImageGc {
    pub fn new(cri: Cri, policy: ImageGcPolicy, usage: Arc<dyn FsUsage>) -> Result<ImageGc, Error> {
        policy.validate()?;
        Ok(ImageGc {
            cri,
            policy,
            usage,
            records: Mutex::new(HashMap::new()),
        })
    }

    /// Notes which images exist and which are in use now (the LRU order's input).
    pub async fn detect(&self) -> Result<(), Error> {
        self.detect_images().await.map(|_| ())
    }

    async fn detect_images(&self) -> Result<(Vec<Image>, HashSet<String>), Error> {
        let images: Vec<Image> = self
            .cri
            .images
            .clone()
            .list_images(api::ListImagesRequest { filter: None })
            .await
            .map_err(cri_err("ListImages"))?
            .into_inner()
            .images
            .into_iter()
            .map(|i| Image {
                name: i.repo_tags.first().cloned().unwrap_or_else(|| i.id.clone()),
                names: i.repo_tags.into_iter().chain(i.repo_digests).collect(),
                id: i.id,
                size: i.size,
                pinned: i.pinned,
            })
            .collect();
        // Every container the runtime has, whoever created it and whatever its state.
        let containers = self
            .cri
            .runtime
            .clone()
            .list_containers(api::ListContainersRequest { filter: None })
            .await
            .map_err(cri_err("ListContainers"))?
            .into_inner()
            .containers;
        let in_use: HashSet<String> = containers
            .iter()
            .flat_map(|c| {
                let by_spec = c.image.as_ref().map(|s| s.image.clone());
                std::iter::once(c.image_ref.clone()).chain(by_spec)
            })
            .filter(|s| !s.is_empty())
            .collect();
        let used = |i: &Image| in_use.contains(&i.id) || i.names.iter().any(|n| in_use.contains(n));
        let now = Instant::now();
        let mut records = self.records.lock();
        for i in &images {
            let r = records.entry(i.id.clone()).or_insert(Record {
                first_detected: now,
                last_used: None,
            });
            if used(i) {
                r.last_used = Some(now);
            }
        }
        records.retain(|id, _| images.iter().any(|i| &i.id == id));
        let in_use_ids = images
            .iter()
            .filter(|i| used(i))
            .map(|i| i.id.clone())
            .collect();
        Ok((images, in_use_ids))
    }

    /// One check: when the image filesystem is at or above the high threshold, removes unused
    /// images (least recently used first) until the low threshold would be reached.
    pub async fn collect(&self) -> Result<Collected, Error> {
        let stats = self.usage.image_fs().await?;
        let capacity = stats.capacity_bytes;
        if capacity == 0 {
            return Err(Error::Config(
                "invalid capacity 0 on image filesystem".into(),
            ));
        }
        let available = stats.available_bytes.min(capacity);
        let usage_percent = 100 - (u128::from(available) * 100 / u128::from(capacity)) as u64;
        let mut done = Collected {
            usage_percent,
            ..Default::default()
        };
        if !self.policy.enabled() || usage_percent < u64::from(self.policy.high_threshold_percent) {
            return Ok(done);
        }
        let low = u128::from(100 - self.policy.low_threshold_percent.min(100));
        done.bytes_to_free =
            (u128::from(capacity) * low / 100).saturating_sub(u128::from(available)) as u64;
        tracing::info!(
            usage_percent,
            high = self.policy.high_threshold_percent,
            bytes_to_free = done.bytes_to_free,
            "image filesystem usage is over the high threshold; removing unused images"
        );
        let (images, in_use) = self.detect_images().await?;
        let sandbox = self.sandbox_images().await;
        let now = Instant::now();
        let records = self.records.lock().clone();
        let mut candidates: Vec<(&Image, Record)> = images
            .iter()
            .filter(|i| !in_use.contains(&i.id) && !i.pinned)
            .filter(|i| !i.names.iter().any(|n| sandbox.contains(n)) && !sandbox.contains(&i.id))
            .filter_map(|i| records.get(&i.id).map(|r| (i, *r)))
            .filter(|(_, r)| now.duration_since(r.first_detected) >= self.policy.min_age)
            .collect();
        // Never used first, then the least recently used, then the longest known.
        candidates.sort_by_key(|(_, r)| (r.last_used, r.first_detected));
        for (image, _) in candidates {
            if done.bytes_freed >= done.bytes_to_free {
                break;
            }
            let removed = self
                .cri
                .images
                .clone()
                .remove_image(api::RemoveImageRequest {
                    image: Some(api::ImageSpec {
                        image: image.id.clone(),
                        ..Default::default()
                    }),
                })
                .await;
            match removed {
                Ok(_) => {
                    tracing::info!(image = %image.name, id = %image.id, size = image.size, "removed an unused image");
                    self.records.lock().remove(&image.id);
                    done.bytes_freed += image.size;
                    done.removed.push(image.name.clone());
                }
                Err(e) => {
                    tracing::warn!(image = %image.name, error = %e.message(), "removing an unused image failed")
                }
            }
        }
        Ok(done)
    }

    /// The names the runtime's sandbox image goes by: the configured one, plus what containerd
    /// reports as `sandboxImage` in its verbose CRI status.
    async fn sandbox_images(&self) -> HashSet<String> {
        let mut names = HashSet::from([
            self.policy.sandbox_image.clone(),
            crate::pods::spec::normalize_image(&self.policy.sandbox_image),
        ]);
        if let Ok(status) = self
            .cri
            .runtime
            .clone()
            .status(api::StatusRequest { verbose: true })
            .await
        {
            let info = status.into_inner().info;
            if let Some(image) = info
                .get("config")
                .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
                .and_then(|c| c["sandboxImage"].as_str().map(str::to_string))
            {
                names.insert(crate::pods::spec::normalize_image(&image));
                names.insert(image);
            }
        }
        names
    }

    /// Detects every `detect_period` and collects every `period`, forever. A collection that
    /// cannot free enough, or fails, is logged (kubelet's `FreeDiskSpaceFailed`/`ImageGCFailed`).
    pub async fn run(self) {
        if !self.policy.enabled() {
            tracing::info!("--image-gc-high-threshold is 100: image garbage collection is off");
            return;
        }
        let mut detect =
            tokio::time::interval(self.policy.detect_period.max(Duration::from_millis(10)));
        detect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut collect = tokio::time::interval(self.policy.period.max(Duration::from_millis(10)));
        collect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first collection waits a full period, as kubelet's.
        collect.tick().await;
        loop {
            tokio::select! {
                _ = detect.tick() => {
                    if let Err(e) = self.detect().await {
                        tracing::debug!(error = %e, "image detection failed");
                    }
                }
                _ = collect.tick() => match self.collect().await {
                    Ok(c) if c.bytes_freed < c.bytes_to_free => tracing::warn!(
                        bytes_to_free = c.bytes_to_free,
                        bytes_freed = c.bytes_freed,
                        "Failed to garbage collect required amount of images: not enough unused images"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "image garbage collection failed"),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_thresholds_as_kubelet() {
        let ok = ImageGcPolicy::default();
        assert!(ok.validate().is_ok() && ok.enabled());
        let off = ImageGcPolicy {
            high_threshold_percent: 100,
            ..ImageGcPolicy::default()
        };
        assert!(off.validate().is_ok() && !off.enabled());
        for (high, low) in [(80, 80), (70, 80), (101, 80)] {
            let p = ImageGcPolicy {
                high_threshold_percent: high,
                low_threshold_percent: low,
                ..ImageGcPolicy::default()
            };
            assert!(p.validate().is_err(), "{high}/{low}");
        }
    }
}

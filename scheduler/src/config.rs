//! The `--config` file: a `KubeSchedulerConfiguration` (kubescheduler.config.k8s.io/v1)
//! subset — profiles with plugins enabled/disabled per extension point, score weights,
//! pluginConfig args and percentageOfNodesToScore — and how a profile becomes a
//! [`Framework`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;

use crate::framework::{Framework, WaitingPods};
use crate::listers::Listers;
use crate::plugins::{registry, PluginArgs, DEFAULT_PLUGINS};
use crate::Error;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerConfiguration {
    #[serde(default)]
    pub profiles: Vec<ProfileConfig>,
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileConfig {
    #[serde(default)]
    pub scheduler_name: Option<String>,
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<u32>,
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginList>,
    #[serde(default)]
    pub plugin_config: Vec<PluginConfig>,
}

/// `plugins.<extensionPoint>` (or `multiPoint`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PluginList {
    #[serde(default)]
    pub enabled: Vec<PluginRef>,
    #[serde(default)]
    pub disabled: Vec<PluginRef>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PluginRef {
    pub name: String,
    #[serde(default)]
    pub weight: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PluginConfig {
    pub name: String,
    #[serde(default)]
    pub args: serde_json::Value,
}

impl SchedulerConfiguration {
    /// Parses YAML or JSON text.
    pub fn parse(text: &str) -> Result<SchedulerConfiguration, Error> {
        serde_yaml::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }

    /// The profiles to run: the file's, or one default profile named `default_name`. A
    /// profile without a schedulerName gets `default_name`.
    pub fn profiles(&self, default_name: &str) -> Vec<ProfileConfig> {
        let mut profiles = if self.profiles.is_empty() {
            vec![ProfileConfig::default()]
        } else {
            self.profiles.clone()
        };
        for p in &mut profiles {
            if p.scheduler_name.is_none() {
                p.scheduler_name = Some(default_name.to_string());
            }
            if p.percentage_of_nodes_to_score.is_none() {
                p.percentage_of_nodes_to_score = self.percentage_of_nodes_to_score;
            }
        }
        profiles
    }
}

impl ProfileConfig {
    /// Builds the framework. The enabled set is the defaults, minus anything disabled at any
    /// extension point (`*` disables all defaults), plus anything enabled; weights come from
    /// `score` or `multiPoint` entries, else the default weight (1 for non-default plugins).
    pub fn build(&self, client: Option<kube::Client>) -> Result<Framework, Error> {
        self.build_with(client, &[], Default::default())
    }

    /// Like [`ProfileConfig::build`], with out-of-tree plugins added to the registry
    /// (upstream's `WithFrameworkOutOfTreeRegistry`); they are enabled by name like any other.
    /// Plugins read other objects from `listers`, which the scheduler's watches fill.
    pub fn build_with(
        &self,
        client: Option<kube::Client>,
        out_of_tree: &[(&'static str, crate::plugins::Factory)],
        listers: Arc<Listers>,
    ) -> Result<Framework, Error> {
        let disabled: BTreeSet<&str> = self
            .plugins
            .values()
            .flat_map(|l| l.disabled.iter().map(|p| p.name.as_str()))
            .collect();
        let mut chosen: Vec<(String, i64)> = if disabled.contains("*") {
            Vec::new()
        } else {
            DEFAULT_PLUGINS
                .iter()
                .filter(|(n, _)| !disabled.contains(n))
                .map(|(n, w)| (n.to_string(), *w))
                .collect()
        };
        for list in self.plugins.values() {
            for p in &list.enabled {
                if let Some(entry) = chosen.iter_mut().find(|(n, _)| *n == p.name) {
                    if let Some(w) = p.weight {
                        entry.1 = w;
                    }
                } else {
                    chosen.push((p.name.clone(), p.weight.unwrap_or(1)));
                }
            }
        }
        let mut table = registry();
        table.extend_from_slice(out_of_tree);
        let waiting_pods = Arc::new(WaitingPods::default());
        let mut fw = Framework {
            waiting_pods: waiting_pods.clone(),
            profile_name: self.scheduler_name.clone().unwrap_or_default(),
            percentage_of_nodes_to_score: self.percentage_of_nodes_to_score.unwrap_or(0),
            ..Default::default()
        };
        for (name, weight) in chosen {
            let Some((_, factory)) = table.iter().find(|(n, _)| *n == name) else {
                return Err(Error::Config(format!("plugin {name:?} does not exist")));
            };
            if name == "PodTopologySpread" {
                let args = self.plugin_config.iter().find(|c| c.name == name);
                crate::plugins::topology_spread::Args::parse(
                    args.map_or(&serde_json::Value::Null, |c| &c.args),
                )
                .map_err(Error::Config)?;
            }
            let args = PluginArgs {
                client: client.clone(),
                args: self
                    .plugin_config
                    .iter()
                    .find(|c| c.name == name)
                    .map(|c| c.args.clone())
                    .unwrap_or_default(),
                listers: listers.clone(),
                waiting_pods: waiting_pods.clone(),
            };
            fw.add(factory(&args), weight.max(1));
        }
        Ok(fw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_profiles_and_weights() {
        let cfg = SchedulerConfiguration::parse(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 40
profiles:
- schedulerName: custom
  plugins:
    score:
      disabled:
      - name: NodeResourcesBalancedAllocation
      enabled:
      - name: TaintToleration
        weight: 7
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
"#,
        )
        .expect("parses");
        let profiles = cfg.profiles("default-scheduler");
        assert_eq!(profiles[0].scheduler_name.as_deref(), Some("custom"));
        let fw = profiles[0].build(None).expect("builds");
        assert_eq!(fw.percentage_of_nodes_to_score, 40);
        let scores: Vec<(&str, i64)> = fw.score.iter().map(|(p, w)| (p.name(), *w)).collect();
        assert_eq!(
            scores,
            [
                ("TaintToleration", 7),
                ("NodeAffinity", 2),
                ("NodeResourcesFit", 1),
                ("PodTopologySpread", 2),
                ("InterPodAffinity", 2),
                ("ImageLocality", 1)
            ]
        );
        assert!(SchedulerConfiguration::parse(
            "profiles: [{plugins: {filter: {enabled: [{name: Nope}]}}}]"
        )
        .expect("parses")
        .profiles("x")[0]
            .build(None)
            .is_err());
    }
}

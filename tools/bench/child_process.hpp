#pragma once
/// The processes specwatch-bench starts (specwatch, specwatch-sim) and what it reads about them from /proc.
///
/// ChildProcess: fork + exec with stdout and stderr going to a log file; the child gets SIGKILL if the bench
/// dies (PR_SET_PDEATHSIG) so no process outlives a crashed benchmark. Exit status and CPU time come from
/// wait4. Not thread-safe: one thread owns each ChildProcess.

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace specwatch::bench {

struct ChildExit {
  bool exited = false;   ///< reaped
  int exit_code = -1;    ///< WEXITSTATUS when it exited normally
  int term_signal = 0;   ///< the signal that killed it, 0 if none
  double cpu_s = 0.0;    ///< user + system CPU time of the whole run (wait4 rusage)
  double max_rss_MiB = 0.0;  ///< ru_maxrss
};

/// How a requested stop went.
struct StopOutcome {
  bool requested = false;     ///< we sent the signal (false: it had exited before)
  double seconds = 0.0;       ///< signal to exit
  bool within_grace = false;  ///< exited by itself within the grace period
  bool killed = false;        ///< needed SIGKILL
};

class ChildProcess {
 public:
  /// Starts argv[0] (a path) with the given arguments and the bench's environment plus `extra_env`
  /// ("NAME=VALUE", overriding); stdout+stderr appended to `log_path`.
  /// Throws std::runtime_error if the program cannot be started.
  ChildProcess(std::string name, std::vector<std::string> argv, std::string log_path,
               std::vector<std::string> extra_env = {});
  ~ChildProcess();  ///< a child still running gets SIGINT, SIGKILL 3 s later, and is reaped
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }
  const std::string& log_path() const { return log_path_; }
  std::string CommandLine() const;

  /// Reaps the child if it has exited; true while it runs.
  bool Running();
  /// Waits up to `timeout_s` for the child to exit; true if it has.
  bool WaitExit(double timeout_s);
  /// Sends `sig`, waits `grace_s` for the exit; if it is still running after `kill_after_s` more, SIGKILL.
  StopOutcome Stop(int sig, double grace_s, double kill_after_s);
  const ChildExit& exit() const { return exit_; }

 private:
  std::string name_;
  std::vector<std::string> argv_;
  std::string log_path_;
  std::vector<std::string> env_;
  pid_t pid_ = -1;
  ChildExit exit_;
};

/// Snapshot of /proc/PID/status and /proc/PID/stat.
struct ProcStats {
  double vm_hwm_MiB = 0.0;  ///< peak resident set
  double vm_rss_MiB = 0.0;  ///< current resident set
  double cpu_s = 0.0;       ///< utime + stime
  int threads = 0;
};
std::optional<ProcStats> ReadProcStats(pid_t pid);

/// CPU seconds (utime + stime) of every thread of `pid`, from /proc/PID/task/TID/stat, as (tid, name, seconds).
struct ThreadCpu {
  int tid = 0;
  std::string name;
  double cpu_s = 0;
};
std::vector<ThreadCpu> ReadThreadCpu(pid_t pid);

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read back, closed). `count` distinct
/// ports: all are held open until every one has been picked, so they differ.
std::vector<int> FreeLoopbackPorts(int count);

/// Last `max_lines` lines of a text file (for error messages).
std::string TailOfFile(const std::string& path, int max_lines);

/// Unix time in seconds.
double UnixNow();
/// Monotonic seconds.
double SteadyNow();

}  // namespace specwatch::bench

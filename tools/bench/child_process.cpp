#include "tools/bench/child_process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <chrono>
#include <cstring>
#include <deque>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace specwatch::bench {

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double SteadyNow() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

ChildProcess::ChildProcess(std::string name, std::vector<std::string> argv, std::string log_path,
                           std::vector<std::string> extra_env)
    : name_(std::move(name)), argv_(std::move(argv)), log_path_(std::move(log_path)) {
  if (argv_.empty()) throw std::runtime_error(name_ + ": empty command line");
  if (access(argv_[0].c_str(), X_OK) != 0) {
    throw std::runtime_error(name_ + ": cannot execute " + argv_[0] + ": " + std::strerror(errno));
  }
  // Everything the child needs is prepared before fork: between fork and exec only async-signal-safe calls.
  std::vector<char*> args;
  for (auto& a : argv_) args.push_back(a.data());
  args.push_back(nullptr);
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string key = entry.substr(0, entry.find('=') + 1);
    bool overridden = false;
    for (const auto& x : extra_env) overridden = overridden || x.rfind(key, 0) == 0;
    if (!overridden) env_.push_back(entry);
  }
  env_.insert(env_.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> envp;
  for (auto& e : env_) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int log_fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error(name_ + ": cannot open log " + log_path_ + ": " + std::strerror(errno));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    throw std::runtime_error(name_ + ": fork failed: " + std::strerror(errno));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    const int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  close(log_fd);
  pid_ = pid;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && Running()) Stop(SIGINT, 2.0, 1.0);  // a run that failed or was interrupted: still be polite
}

std::string ChildProcess::CommandLine() const {
  std::string s;
  for (const auto& e : env_) {  // only what the bench added: entries not in its own environment
    bool inherited = false;
    for (char** p = environ; *p != nullptr && !inherited; ++p) inherited = e == *p;
    if (!inherited) s += e + " ";
  }
  for (const auto& a : argv_) {
    if (!s.empty()) s += ' ';
    const bool quote = a.find_first_of(" \"'<>|&;*?$") != std::string::npos || a.empty();
    s += quote ? "'" + a + "'" : a;
  }
  return s;
}

bool ChildProcess::Running() {
  if (exit_.exited || pid_ <= 0) return false;
  int status = 0;
  rusage ru{};
  const pid_t r = wait4(pid_, &status, WNOHANG, &ru);
  if (r == 0) return true;
  exit_.exited = true;
  if (r == pid_) {
    if (WIFEXITED(status)) exit_.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) exit_.term_signal = WTERMSIG(status);
    exit_.cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                  1e-6 * static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    exit_.max_rss_MiB = static_cast<double>(ru.ru_maxrss) / 1024.0;
  }
  return false;
}

bool ChildProcess::WaitExit(double timeout_s) {
  const double until = SteadyNow() + timeout_s;
  while (Running()) {
    if (SteadyNow() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

StopOutcome ChildProcess::Stop(int sig, double grace_s, double kill_after_s) {
  StopOutcome out;
  if (!Running()) return out;
  out.requested = true;
  const double t0 = SteadyNow();
  kill(pid_, sig);
  out.within_grace = WaitExit(grace_s);
  if (!out.within_grace && !WaitExit(kill_after_s)) {
    kill(pid_, SIGKILL);
    out.killed = true;
    WaitExit(5.0);
  }
  out.seconds = SteadyNow() - t0;
  return out;
}

namespace {

/// utime + stime in seconds and the command name from a /proc/.../stat file.
bool ParseStat(const std::string& path, std::string* name, double* cpu_s) {
  std::ifstream stat(path);
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto open = text.find('(');
  const auto paren = text.rfind(')');
  if (open == std::string::npos || paren == std::string::npos || paren < open) return false;
  if (name) *name = text.substr(open + 1, paren - open - 1);
  // Fields after "pid (comm)": 3 state, 4 ppid, ..., 14 utime, 15 stime (clock ticks).
  std::istringstream is(text.substr(paren + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && (is >> field); ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  *cpu_s = (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
  return true;
}

}  // namespace

std::optional<ProcStats> ReadProcStats(pid_t pid) {
  ProcStats s;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  if (!status) return std::nullopt;
  std::string line;
  while (std::getline(status, line)) {
    std::istringstream is(line);
    std::string key;
    double value = 0;
    is >> key >> value;
    if (key == "VmHWM:") s.vm_hwm_MiB = value / 1024.0;
    if (key == "VmRSS:") s.vm_rss_MiB = value / 1024.0;
    if (key == "Threads:") s.threads = static_cast<int>(value);
  }
  if (!ParseStat("/proc/" + std::to_string(pid) + "/stat", nullptr, &s.cpu_s)) return std::nullopt;
  return s;
}

std::vector<ThreadCpu> ReadThreadCpu(pid_t pid) {
  std::vector<ThreadCpu> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    ThreadCpu t;
    try {
      t.tid = std::stoi(entry.path().filename().string());
    } catch (...) {
      continue;
    }
    if (ParseStat(entry.path().string() + "/stat", &t.name, &t.cpu_s)) out.push_back(t);
  }
  std::sort(out.begin(), out.end(), [](const ThreadCpu& a, const ThreadCpu& b) { return a.cpu_s > b.cpu_s; });
  return out;
}

std::vector<int> FreeLoopbackPorts(int count) {
  std::vector<int> fds, ports;
  for (int i = 0; i < count; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    fds.push_back(fd);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      for (int f : fds) close(f);
      throw std::runtime_error(std::string("cannot pick a free port: ") + std::strerror(errno));
    }
    ports.push_back(ntohs(a.sin_port));
  }
  for (int f : fds) close(f);
  return ports;
}

std::string TailOfFile(const std::string& path, int max_lines) {
  std::ifstream in(path);
  std::deque<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
    if (static_cast<int>(lines.size()) > max_lines) lines.pop_front();
  }
  std::string out;
  for (const auto& l : lines) out += "    " + l + "\n";
  return out;
}

}  // namespace specwatch::bench

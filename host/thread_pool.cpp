// ThreadPool: workers drain one FIFO queue; shutdown finishes what was queued.
#include "host/thread_pool.h"

#include <exception>

namespace mirad {

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::thread::hardware_concurrency());
  if (n_threads <= 0) n_threads = 1;
  m_workers.reserve(n_threads);
  for (int i = 0; i < n_threads; ++i)
    m_workers.emplace_back([this](std::stop_token stop) { worker_loop(stop); });
}

ThreadPool::~ThreadPool() {
  // Ask every worker first so none sleeps through the shutdown; each exits once the queue is
  // empty, so tasks already submitted still run and their futures never report broken_promise.
  for (auto& w : m_workers) w.request_stop();
  m_wake.notify_all();
  m_workers.clear();
}

void ThreadPool::enqueue(std::function<void()> job) {
  {
    std::lock_guard lock(m_mutex);
    m_jobs.push(std::move(job));
  }
  m_wake.notify_one();
}

void ThreadPool::worker_loop(std::stop_token stop) {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(m_mutex);
      m_wake.wait(lock, stop, [this] { return !m_jobs.empty(); });
      if (m_jobs.empty()) return;  // stop requested and nothing left to do
      job = std::move(m_jobs.front());
      m_jobs.pop();
    }
    job();  // submit() wraps jobs in packaged_task, which captures any exception
  }
}

void ThreadPool::parallel_for(std::size_t n, const std::function<void(std::size_t)>& fn) {
  std::vector<std::future<void>> done;
  done.reserve(n);
  for (std::size_t i = 0; i < n; ++i) done.push_back(submit([&fn, i] { fn(i); }));
  // Wait for every task even after a failure: they reference fn and the caller's data.
  std::exception_ptr first;
  for (auto& f : done) {
    try {
      f.get();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace mirad

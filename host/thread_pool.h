// A small fixed-size thread pool (std::jthread workers, one FIFO queue) for host-side work such
// as image decoding; exceptions travel back to the caller through futures.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <queue>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace mirad {

class ThreadPool {
 public:
  // n_threads <= 0 means one per hardware thread (at least one).
  explicit ThreadPool(int n_threads = 0);
  // Finishes the queued tasks, then joins the workers. Never throws: task exceptions live in
  // their futures.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(m_workers.size()); }

  // Queues fn(); the future yields its result or rethrows its exception.
  template <typename F>
  std::future<std::invoke_result_t<F>> submit(F&& fn) {
    using R = std::invoke_result_t<F>;
    // packaged_task is move-only and std::function needs copyable targets (move_only_function
    // is C++23), hence the shared_ptr.
    auto task = std::make_shared<std::packaged_task<R()>>(std::forward<F>(fn));
    std::future<R> result = task->get_future();
    enqueue([task] { (*task)(); });
    return result;
  }

  // Runs fn(i) for every i in [0, n) on the pool and waits for all of them. If any throw, the
  // exception of the lowest index is rethrown after every task has finished, so the caller
  // sees the same error whatever the thread timing. Must not be called from a pool thread
  // (it would wait on tasks queued behind itself).
  void parallel_for(std::size_t n, const std::function<void(std::size_t)>& fn);

 private:
  void enqueue(std::function<void()> job);
  void worker_loop(std::stop_token stop);

  std::mutex m_mutex;
  std::condition_variable_any m_wake;
  std::queue<std::function<void()>> m_jobs;
  std::vector<std::jthread> m_workers;  // last member: joined before the queue is destroyed
};

}  // namespace mirad

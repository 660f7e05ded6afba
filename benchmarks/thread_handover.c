/* How long one thread takes to hand work to another on this machine.

     gcc -O2 -pthread benchmarks/thread_handover.c -o /tmp/thread_handover && /tmp/thread_handover

   Two threads pass a turn back and forth 20,000 times, first through a mutex and a
   condition variable (the waiting thread sleeps in the kernel, as an idle worker of a
   thread pool does, and takes the mutex again on waking), then through a spinning
   atomic flag (the waiting thread never sleeps). It prints the one-way latency of each
   in microseconds. step_profile.py reports the per-op cost that explains XLA:CPU's
   measured step; waking a sleeping worker is one part of it. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ROUNDS 20000

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int turn = 0;
static atomic_int spin_turn = 0;

static double seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Spins until the flag holds `value`; yields the core now and then, so that on a single
   core (taskset) the other thread still gets to run. */
static void spin_until(int value) {
  for (long spins = 1; atomic_load(&spin_turn) != value; spins++)
    if (spins % 100000 == 0) sched_yield();
}

static void start_peer(pthread_t *peer, void *(*body)(void *)) {
  if (pthread_create(peer, NULL, body, NULL) != 0) {
    perror("pthread_create");
    exit(1);
  }
}

static void *sleeping_peer(void *unused) {
  for (int i = 0; i < ROUNDS; i++) {
    pthread_mutex_lock(&mutex);
    while (turn != 1) pthread_cond_wait(&changed, &mutex);
    turn = 0;
    pthread_cond_signal(&changed);
    pthread_mutex_unlock(&mutex);
  }
  return unused;
}

static void *spinning_peer(void *unused) {
  for (int i = 0; i < ROUNDS; i++) {
    spin_until(1);
    atomic_store(&spin_turn, 0);
  }
  return unused;
}

int main(void) {
  pthread_t peer;
  start_peer(&peer, sleeping_peer);
  double start = seconds();
  for (int i = 0; i < ROUNDS; i++) {
    pthread_mutex_lock(&mutex);
    turn = 1;
    pthread_cond_signal(&changed);
    while (turn != 0) pthread_cond_wait(&changed, &mutex);
    pthread_mutex_unlock(&mutex);
  }
  double sleeping = (seconds() - start) / ROUNDS / 2 * 1e6;
  pthread_join(peer, NULL);

  start_peer(&peer, spinning_peer);
  start = seconds();
  for (int i = 0; i < ROUNDS; i++) {
    atomic_store(&spin_turn, 1);
    spin_until(0);
  }
  double spinning = (seconds() - start) / ROUNDS / 2 * 1e6;
  pthread_join(peer, NULL);
  printf("hand-over, one way: sleeping worker (mutex + condition variable) %.2f us; "
         "spinning worker %.2f us\n", sleeping, spinning);
  printf("{\"sleeping_handover_us\": %.3f, \"spinning_handover_us\": %.3f}\n", sleeping, spinning);
  return 0;
}
